package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearthsh/hearth/internal/store/sqlstore"
)

// db adapts a pgx pool to sqlstore.DB.
type db struct {
	pool *pgxpool.Pool
}

var _ sqlstore.DB = (*db)(nil)

func (d *db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return querier{d.pool}.Exec(ctx, query, args...)
}

func (d *db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return d.pool.QueryRow(ctx, query, args...)
}

func (d *db) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return querier{d.pool}.Query(ctx, query, args...)
}

// Tx runs fn in a READ COMMITTED transaction; the shared code locks what it updates with
// FOR UPDATE.
func (d *db) Tx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return inTx(ctx, d.pool, func(tx pgx.Tx) error { return fn(querier{tx}) })
}

func (d *db) Close() error {
	d.pool.Close()
	return nil
}

// inTx runs fn in a transaction begun on b (the pool or one connection), rolling back when
// fn fails or panics and returning fn's error unwrapped.
func inTx(ctx context.Context, b interface {
	Begin(context.Context) (pgx.Tx, error)
}, fn func(pgx.Tx) error) error {
	tx, err := b.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Rollback after Commit is a no-op; after a failure it must run even if ctx is done.
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pgxQuerier is what the pool, a connection and a transaction have in common.
type pgxQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// querier adapts a pgxQuerier to sqlstore.Querier and migrations.Execer.
type querier struct{ q pgxQuerier }

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q querier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return q.q.QueryRow(ctx, query, args...)
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// dialect is PostgreSQL's side of the shared queries.
var dialect = sqlstore.Dialect{
	ForUpdate: "FOR UPDATE",
	// The metadata column is TEXT (the schema is shared with SQLite); ->> takes the key as a
	// plain text argument, so no quoting is involved.
	MetadataValue:     func(param string) string { return "(metadata::jsonb ->> " + param + "::text)" },
	MetadataKey:       func(key string) any { return key },
	IsUniqueViolation: isUniqueViolation,
	IsNoRows:          func(err error) bool { return errors.Is(err, pgx.ErrNoRows) },
}

// uniqueViolation is SQLSTATE unique_violation.
const uniqueViolation = "23505"

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == uniqueViolation
}
