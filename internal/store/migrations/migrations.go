// Package migrations holds the schema the SQL drivers share, as numbered .sql files written
// in SQL that both SQLite and PostgreSQL accept, and the runner that applies them. Keeping a
// single set of files is what guarantees the two drivers store the same thing.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
)

//go:embed *.sql
var files embed.FS

// Files returns the embedded .sql files, for callers that want to show or check them.
func Files() fs.FS { return files }

// Migration is one numbered schema change.
type Migration struct {
	Version int    // the file name's numeric prefix
	Name    string // the file name, e.g. "0001_init.sql"
	SQL     string
}

// fileName is the only accepted name shape. It keeps versions unambiguous and lets the
// runner write the name into SQL as a literal without quoting concerns.
var fileName = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)

// All returns the embedded migrations in version order. A misnamed file, a duplicate
// version or a gap fails here, so any test that opens a store catches it.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %q: name must look like 0001_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1]) // four digits always parse
		body, err := fs.ReadFile(files, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (versions start at 1 without gaps)", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}
