package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearthsh/hearth/internal/store/migrations"
)

// migrationLock is the advisory lock key held while migrating, so that replicas starting at
// once apply each migration once. Any fixed number works; this one spells "hearthmg".
const migrationLock int64 = 0x6865617274686d67

// migrate applies pending migrations on one connection that holds the advisory lock for
// the whole run. The lock is session-level, so it is released explicitly, and by the server
// if the connection dies.
func migrate(ctx context.Context, pool *pgxpool.Pool) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("migrate: take lock: %w", err)
	}
	defer func() {
		// Unlock even if ctx is done, or the pooled session would keep the lock.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock); uerr != nil {
			err = errors.Join(err, fmt.Errorf("migrate: release lock: %w", uerr))
		}
	}()
	_, err = migrations.Apply(ctx, func(ctx context.Context, fn func(migrations.Execer) error) error {
		return inTx(ctx, conn, func(tx pgx.Tx) error { return fn(querier{tx}) })
	})
	return err
}
