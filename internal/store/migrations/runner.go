package migrations

import (
	"context"
	"fmt"
	"time"
)

// Execer runs SQL and reports the rows it affected. Called without arguments it must accept
// several statements in one string, as a migration file holds.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
}

// InTx runs fn in one transaction, committing when fn returns nil and rolling back
// otherwise. Each driver provides its own.
type InTx func(ctx context.Context, fn func(Execer) error) error

// createTable is idempotent so that the runner needs no query results from the driver.
const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)`

// Apply applies, in version order, every embedded migration not yet recorded in
// schema_migrations, each in its own transaction together with its record, and returns how
// many it applied. Recording first and skipping when the record already exists makes a
// half-applied migration impossible: a failure rolls back both.
//
// Apply does not stop two runners from racing on the same database; the caller does (the
// PostgreSQL driver holds an advisory lock, SQLite serializes write transactions).
func Apply(ctx context.Context, inTx InTx) (int, error) {
	ms, err := All()
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range ms {
		ran := false
		err := inTx(ctx, func(x Execer) error {
			if _, err := x.Exec(ctx, createTable); err != nil {
				return fmt.Errorf("create schema_migrations: %w", err)
			}
			// Version and name are validated by All, so literals are safe; the driver may
			// then run them without arguments, which both accept.
			n, err := x.Exec(ctx, fmt.Sprintf(
				"INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, '%s', %d) ON CONFLICT (version) DO NOTHING",
				m.Version, m.Name, time.Now().UnixMilli()))
			if err != nil {
				return fmt.Errorf("record: %w", err)
			}
			if n == 0 {
				return nil // applied before
			}
			if _, err := x.Exec(ctx, m.SQL); err != nil {
				return err
			}
			ran = true
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if ran {
			applied++
		}
	}
	return applied, nil
}
