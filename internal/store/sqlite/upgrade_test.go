package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/hearthsh/hearth/internal/store/migrations"
)

// TestUpgradeKeepsSecureSandboxesPrivate: a database written before the network columns
// existed opens with them added, and sandboxes that were created secure (whose ports then
// always required the traffic token) keep requiring it.
func TestUpgradeKeepsSecureSandboxesPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	initSQL, err := fs.ReadFile(migrations.Files(), "0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(initSQL),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
		`INSERT INTO sandboxes VALUES ('old-secure', 't', '', 'h', 'running', 1, 512, 0, 1, 2, '{}', '{}', '0.6.4', 'e', 'tok', TRUE, TRUE, FALSE, FALSE, 1, 1)`,
		`INSERT INTO sandboxes VALUES ('old-open', 't', '', 'h', 'running', 1, 512, 0, 1, 2, '{}', '{}', '0.6.4', '', '', FALSE, FALSE, FALSE, FALSE, 1, 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open old database: %v", err)
	}
	defer s.Close()
	for _, tt := range []struct {
		id             string
		public, online bool
	}{{"old-secure", false, true}, {"old-open", true, false}} {
		sb, err := s.Sandbox(context.Background(), tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if sb.AllowPublicTraffic != tt.public || sb.AllowInternet != tt.online || sb.AllowOut != nil || sb.DenyOut != nil {
			t.Errorf("%s after upgrade: public %v internet %v allowOut %v denyOut %v; want public %v internet %v, no lists",
				tt.id, sb.AllowPublicTraffic, sb.AllowInternet, sb.AllowOut, sb.DenyOut, tt.public, tt.online)
		}
	}
}
