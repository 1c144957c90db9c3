package migrations

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestAll(t *testing.T) {
	ms, err := All()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Fatalf("migration %d: %+v", i, m)
		}
	}
}

// fakeDB records statements; recorded reports whether a version's record already exists.
type fakeDB struct {
	recorded map[int]bool
	bodies   []string
	failBody bool
}

func (f *fakeDB) inTx(ctx context.Context, fn func(Execer) error) error { return fn(f) }

func (f *fakeDB) Exec(_ context.Context, sql string, _ ...any) (int64, error) {
	switch {
	case strings.HasPrefix(sql, "CREATE TABLE IF NOT EXISTS schema_migrations"):
		return 0, nil
	case strings.HasPrefix(sql, "INSERT INTO schema_migrations"):
		var v int
		for _, m := range mustAll() {
			if strings.Contains(sql, "'"+m.Name+"'") {
				v = m.Version
			}
		}
		if f.recorded[v] {
			return 0, nil
		}
		f.recorded[v] = true
		return 1, nil
	default:
		if f.failBody {
			return 0, errors.New("syntax error")
		}
		f.bodies = append(f.bodies, sql)
		return 0, nil
	}
}

func mustAll() []Migration {
	ms, err := All()
	if err != nil {
		panic(err)
	}
	return ms
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	f := &fakeDB{recorded: map[int]bool{}}
	n, err := Apply(ctx, f.inTx)
	if err != nil || n != len(mustAll()) || len(f.bodies) != n {
		t.Fatalf("first run: applied %d (%d bodies), %v; want %d", n, len(f.bodies), err, len(mustAll()))
	}
	// Recorded migrations are skipped.
	f.bodies = nil
	if n, err := Apply(ctx, f.inTx); err != nil || n != 0 || len(f.bodies) != 0 {
		t.Fatalf("second run: applied %d (%d bodies), %v; want none", n, len(f.bodies), err)
	}
	// A failing migration is reported with its file name.
	f = &fakeDB{recorded: map[int]bool{}, failBody: true}
	if _, err := Apply(ctx, f.inTx); err == nil || !strings.Contains(err.Error(), mustAll()[0].Name) {
		t.Fatalf("failing body: %v, want an error naming %s", err, mustAll()[0].Name)
	}
}
