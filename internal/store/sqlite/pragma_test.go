package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestConnectionSettings checks the settings every connection of both pools must carry:
// WAL (so reads do not wait for the writer), the busy timeout, foreign keys (template
// aliases cascade) and, on the read pool, refusal to write.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	d, err := openDB(ctx, filepath.Join(t.TempDir(), "hearth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for name, pool := range map[string]*sql.DB{"writer": d.w, "reader": d.r} {
		for pragma, want := range map[string]string{
			"journal_mode": "wal", "busy_timeout": "10000", "foreign_keys": "1",
		} {
			var got string
			if err := pool.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", name, pragma, err)
			}
			if got != want {
				t.Errorf("%s: %s = %s, want %s", name, pragma, got, want)
			}
		}
	}
	if _, err := d.r.ExecContext(ctx, "CREATE TABLE x (y INTEGER)"); err == nil {
		t.Error("the read pool accepted a write")
	}
	if _, err := d.w.ExecContext(ctx, "CREATE TABLE x (y INTEGER)"); err != nil {
		t.Errorf("the writer refused a write: %v", err)
	}
}
