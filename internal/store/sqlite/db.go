package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/hearthsh/hearth/internal/store/sqlstore"
)

// db routes writes to the single writer connection and reads to the read pool.
type db struct {
	w, r *sql.DB
}

var _ sqlstore.DB = (*db)(nil)

// openDB opens the writer first: it switches the file to WAL mode, which the read-only
// connections could not do.
func openDB(ctx context.Context, path string) (*db, error) {
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(readers())
	r.SetMaxIdleConns(readers())
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	return &db{w: w, r: r}, nil
}

func (d *db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return execOn(ctx, d.w, query, args)
}

func (d *db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return d.r.QueryRowContext(ctx, query, args...)
}

func (d *db) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := d.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

// Tx runs fn in a BEGIN IMMEDIATE transaction on the writer (the DSN's _txlock), so the
// rows fn reads cannot change before it commits.
func (d *db) Tx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // releases the writer also when fn panics; a no-op after Commit
	if err := fn(txQuerier{tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d *db) Close() error {
	return errors.Join(d.r.Close(), d.w.Close())
}

// txQuerier runs statements inside a transaction.
type txQuerier struct{ tx *sql.Tx }

func (q txQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return execOn(ctx, q.tx, query, args)
}

func (q txQuerier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return q.tx.QueryRowContext(ctx, query, args...)
}

func (q txQuerier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func execOn(ctx context.Context, e interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, query string, args []any) (int64, error) {
	res, err := e.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// sqlRows adapts *sql.Rows, whose Close error carries nothing Err does not.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

// dialect is SQLite's side of the shared queries.
var dialect = sqlstore.Dialect{
	ForUpdate: "", // BEGIN IMMEDIATE holds the database's write lock instead
	// json_each compares the decoded key, so a key needs no JSON-path quoting whatever
	// characters it holds; value is the decoded string.
	MetadataValue: func(param string) string {
		return "(SELECT je.value FROM json_each(sandboxes.metadata) AS je WHERE je.key = " + param + ")"
	},
	MetadataKey:       func(key string) any { return key },
	IsUniqueViolation: isUniqueViolation,
	IsNoRows:          func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}
