// Package sqlite is the embedded store driver: one SQLite file through modernc.org/sqlite
// (pure Go, no cgo), the default for a single control plane.
//
// SQLite allows one writer at a time, so the driver keeps two connection pools on the file:
// a single writer connection, through which every write and transaction goes (its
// transactions begin IMMEDIATE, taking the write lock before they read), and several
// read-only connections that WAL mode lets read while the writer writes.
package sqlite

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"

	"github.com/hearthsh/hearth/internal/store/migrations"
	"github.com/hearthsh/hearth/internal/store/sqlstore"
)

// Store is a store.Store on one SQLite file.
type Store struct {
	*sqlstore.Store
}

// busyTimeoutMS bounds how long a connection waits for another process's lock (or for the
// WAL checkpoint) before failing with SQLITE_BUSY.
const busyTimeoutMS = 10000

// Open opens or creates the database file at path and applies pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	d, err := openDB(ctx, abs)
	if err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	if _, err := migrations.Apply(ctx, func(ctx context.Context, fn func(migrations.Execer) error) error {
		return d.Tx(ctx, func(q sqlstore.Querier) error { return fn(q) })
	}); err != nil {
		d.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	return &Store{Store: sqlstore.New(d, dialect)}, nil
}

// dsn builds a file: URI for path (escaped, so '?' or '#' in a name are literal) with the
// connection settings every connection in a pool gets.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)") // durable in WAL mode except for the last commits on power loss
	if readOnly {
		q.Add("_pragma", "query_only(1)") // a write sent to the reader pool is a bug: fail loudly
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// readers is the size of the read pool; WAL readers do not block each other.
func readers() int { return max(4, runtime.GOMAXPROCS(0)) }
