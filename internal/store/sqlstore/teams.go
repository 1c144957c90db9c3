package sqlstore

import (
	"context"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

const teamCols = `id, name, created_at`

func scanTeam(r Row) (store.Team, error) {
	var (
		t       store.Team
		created int64
	)
	if err := r.Scan(&t.ID, &t.Name, &created); err != nil {
		return store.Team{}, err
	}
	t.CreatedAt = fromMillis(created)
	return t, nil
}

// CreateTeam stores t; a zero CreatedAt becomes now.
func (s *Store) CreateTeam(ctx context.Context, t store.Team) error {
	if t.ID == "" || t.Name == "" {
		return fmt.Errorf("create team: ID and name are required")
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	_, err := s.db.Exec(ctx, `INSERT INTO teams (`+teamCols+`) VALUES ($1, $2, $3)`, t.ID, t.Name, millis(t.CreatedAt))
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return fmt.Errorf("team %s (%s): %w", t.Name, t.ID, store.ErrConflict)
		}
		return fmt.Errorf("create team %s: %w", t.Name, err)
	}
	return nil
}

// Team finds a team by ID, then by name: an ID wins over an equal name.
func (s *Store) Team(ctx context.Context, idOrName string) (store.Team, error) {
	for _, col := range []string{"id", "name"} {
		t, err := scanTeam(s.db.QueryRow(ctx, `SELECT `+teamCols+` FROM teams WHERE `+col+` = $1`, idOrName))
		if err == nil {
			return t, nil
		}
		if !s.d.IsNoRows(err) {
			return store.Team{}, fmt.Errorf("team %s: %w", idOrName, err)
		}
	}
	return store.Team{}, fmt.Errorf("team %s: %w", idOrName, store.ErrNotFound)
}

// ListTeams returns every team, oldest first.
func (s *Store) ListTeams(ctx context.Context) ([]store.Team, error) {
	rows, err := s.db.Query(ctx, `SELECT `+teamCols+` FROM teams ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	ts, err := collect(rows, scanTeam)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	return ts, nil
}
