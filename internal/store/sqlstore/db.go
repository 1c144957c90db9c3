// Package sqlstore implements store.Store once, over the small database interface below, so
// that the SQLite and PostgreSQL drivers share every query and rule and differ only where
// their databases do: connections, transactions, locking, JSON access and error codes.
// All SQL here uses $N placeholders, which both pgx and modernc.org/sqlite bind by position.
package sqlstore

import "context"

// Row is one result row.
type Row interface {
	Scan(dest ...any) error
}

// Rows iterates over a result set; Close must be called.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Querier runs statements, either on the database or inside a transaction.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	QueryRow(ctx context.Context, query string, args ...any) Row
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// DB is what a driver provides. Queries run directly on DB only read; every write goes
// through Exec or Tx, which lets the SQLite driver route writes to its single writer.
type DB interface {
	Querier
	// Tx runs fn in a transaction that serializes with the rows it reads for update,
	// commits when fn returns nil, and otherwise rolls back and returns fn's error as is.
	Tx(ctx context.Context, fn func(Querier) error) error
	Close() error
}

// Dialect is what differs between the databases in the SQL itself and in their errors.
type Dialect struct {
	// ForUpdate follows the SELECT that UpdateSandbox reads the row with: "FOR UPDATE" on
	// PostgreSQL; empty on SQLite, whose BEGIN IMMEDIATE already locks the database.
	ForUpdate string
	// MetadataValue returns an SQL expression for the text stored under a metadata key in the
	// sandboxes.metadata JSON document, the key being bound to the placeholder param.
	MetadataValue func(param string) string
	// MetadataKey turns a metadata key into the argument bound to that placeholder.
	MetadataKey func(key string) any
	// IsUniqueViolation reports a primary-key or unique-constraint violation.
	IsUniqueViolation func(error) bool
	// IsNoRows reports that QueryRow found no row.
	IsNoRows func(error) bool
}
