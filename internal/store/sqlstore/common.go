package sqlstore

import (
	"context"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

// collect scans every row with scan and closes rows.
func collect[T any](rows Rows, scan func(Row) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// deleteByID deletes one row by primary key; table is one of this package's constants,
// never caller input. what names the record in errors.
func (s *Store) deleteByID(ctx context.Context, table, what, id string) error {
	n, err := s.db.Exec(ctx, `DELETE FROM `+table+` WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete %s %s: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", what, id, store.ErrNotFound)
	}
	return nil
}
