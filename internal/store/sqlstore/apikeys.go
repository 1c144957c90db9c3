package sqlstore

import (
	"context"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

const apiKeyCols = `id, name, hash, mask, created_at, last_used_at, team_id`

func scanAPIKey(r Row) (store.APIKey, error) {
	var (
		k        store.APIKey
		created  int64
		lastUsed *int64
	)
	if err := r.Scan(&k.ID, &k.Name, &k.Hash, &k.Mask, &created, &lastUsed, &k.TeamID); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = fromMillis(created)
	if lastUsed != nil {
		t := fromMillis(*lastUsed)
		k.LastUsedAt = &t
	}
	return k, nil
}

// CreateAPIKey stores k in its team, which must exist; a zero CreatedAt becomes now.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	if k.TeamID == "" {
		return fmt.Errorf("create api key %s: %w", k.ID, store.ErrNoTeam)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now()
	}
	var lastUsed *int64
	if k.LastUsedAt != nil {
		ms := millis(*k.LastUsedAt)
		lastUsed = &ms
	}
	// The insert names its team in the same statement, so a key cannot land in a team that
	// does not exist (there is no foreign key: SQLite cannot add one to an existing table).
	n, err := s.db.Exec(ctx, `INSERT INTO api_keys (`+apiKeyCols+`)
SELECT $1, $2, $3, $4, $5, $6, id FROM teams WHERE id = $7`,
		k.ID, k.Name, k.Hash, k.Mask, millis(k.CreatedAt), lastUsed, k.TeamID)
	if err == nil && n == 0 {
		return fmt.Errorf("create api key %s: team %s: %w", k.ID, k.TeamID, store.ErrNotFound)
	}
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return fmt.Errorf("api key %s: %w", k.ID, store.ErrConflict)
		}
		return fmt.Errorf("create api key %s: %w", k.ID, err)
	}
	return nil
}

// APIKeyByHash finds the key and sets its LastUsedAt in one statement.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error) {
	var k store.APIKey
	err := s.db.Tx(ctx, func(q Querier) error {
		var err error
		k, err = scanAPIKey(q.QueryRow(ctx,
			`UPDATE api_keys SET last_used_at = $1 WHERE hash = $2 RETURNING `+apiKeyCols,
			millis(now()), hash))
		return err
	})
	if err != nil {
		if s.d.IsNoRows(err) {
			return store.APIKey{}, fmt.Errorf("api key with that hash: %w", store.ErrNotFound)
		}
		return store.APIKey{}, fmt.Errorf("api key by hash: %w", err)
	}
	return k, nil
}

// ListAPIKeys returns one team's keys (every key for ""), oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, teamID string) ([]store.APIKey, error) {
	rows, err := s.db.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys
WHERE $1 = '' OR team_id = $1 ORDER BY created_at, id`, teamID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys, err := collect(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return keys, nil
}

// DeleteAPIKey removes the key with this ID.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "api_keys", "api key", id)
}
