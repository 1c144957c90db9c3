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
	s := openUpgraded(t, db, path)
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

// TestUpgradeTagsDefault: a database from before tags opens with each API-built template's
// current ready build as its default tag; templates built on the agents get no tag.
func TestUpgradeTagsDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const build = "6b3f0d6e-0000-4000-8000-000000000001"
	for _, m := range all {
		if m.Version >= 11 {
			break
		}
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := db.Exec(`INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO templates (id, cpus, memory_mib, disk_mib, envd_version, build_id, build_status, public, created_at, updated_at, team_id)
VALUES ('apitpl00000000000001', 1, 512, 0, '0.6.4', '` + build + `', 'ready', FALSE, 1, 7, 'default')`,
		`INSERT INTO template_builds (id, template_id, team_id, status, cpus, memory_mib, created_at, updated_at)
VALUES ('` + build + `', 'apitpl00000000000001', 'default', 'ready', 1, 512, 1, 2)`,
		`INSERT INTO templates (id, cpus, memory_mib, disk_mib, envd_version, build_id, build_status, public, created_at, updated_at, team_id)
VALUES ('base', 2, 512, 0, '0.6.4', 'abc-123', 'ready', TRUE, 1, 1, 'default')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	s := openUpgraded(t, db, path)
	ctx := context.Background()
	tag, err := s.TemplateTag(ctx, "apitpl00000000000001", "default")
	if err != nil || tag.BuildID != build || tag.CreatedAt.UnixMilli() != 7 {
		t.Fatalf("default tag after upgrade: %+v, %v; want build %s", tag, err, build)
	}
	if tags, err := s.ListTemplateTags(ctx, "base"); err != nil || len(tags) != 0 {
		t.Fatalf("tags of an agent-built template: %+v, %v; want none", tags, err)
	}
	if b, err := s.TemplateBuild(ctx, build); err != nil || b.AgentName() != "apitpl00000000000001" || b.Tags != nil {
		t.Fatalf("old build after upgrade: %+v, %v; want it kept under the template ID", b, err)
	}
}

// openUpgraded closes the old database db and opens it as a store, which migrates it.
func openUpgraded(t *testing.T, db *sql.DB, path string) *Store {
	t.Helper()
	db.Close()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open old database: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
