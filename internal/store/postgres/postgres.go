// Package postgres is the store driver for PostgreSQL through pgx, for control plane
// replicas that share one database. Row locks (SELECT … FOR UPDATE) keep concurrent
// UpdateSandbox calls from interleaving across replicas.
package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearthsh/hearth/internal/store/sqlstore"
)

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	*sqlstore.Store
}

// Open connects to databaseURL (a postgres:// URL or key=value DSN, as pgx parses it) and
// applies pending migrations.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// The URL may hold a password: do not echo it.
		return nil, fmt.Errorf("postgres store: parse database URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	return &Store{Store: sqlstore.New(&db{pool: pool}, dialect)}, nil
}
