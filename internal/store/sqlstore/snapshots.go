package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/hearthsh/hearth/internal/store"
)

const snapshotCols = `id, name, team_id, source_sandbox_id, host_id, template_id, alias, cpus,
    memory_mib, disk_mib, envd_version, size_bytes, created_at, build_id`

func scanSnapshot(r Row) (store.Snapshot, error) {
	var (
		s       store.Snapshot
		created int64
	)
	if err := r.Scan(&s.ID, &s.Name, &s.TeamID, &s.SourceSandboxID, &s.HostID, &s.TemplateID, &s.Alias,
		&s.CPUs, &s.MemoryMiB, &s.DiskMiB, &s.EnvdVersion, &s.SizeBytes, &created, &s.BuildID); err != nil {
		return store.Snapshot{}, err
	}
	s.CreatedAt = fromMillis(created)
	return s, nil
}

// CreateSnapshot inserts sn; a named one first deletes the team's snapshot of that name in
// the same transaction, so two creates racing for one name leave exactly one holder (the
// unique index turns the loser's insert into ErrConflict). A zero CreatedAt becomes now.
func (s *Store) CreateSnapshot(ctx context.Context, sn store.Snapshot) (*store.Snapshot, error) {
	if sn.CreatedAt.IsZero() {
		sn.CreatedAt = now()
	}
	var replaced *store.Snapshot
	err := s.db.Tx(ctx, func(q Querier) error {
		replaced = nil
		if sn.Name != "" {
			old, err := scanSnapshot(q.QueryRow(ctx, `SELECT `+snapshotCols+` FROM snapshots
WHERE team_id = $1 AND name = $2 `+s.d.ForUpdate, sn.TeamID, sn.Name))
			switch {
			case err == nil:
				if _, err := q.Exec(ctx, `DELETE FROM snapshots WHERE id = $1`, old.ID); err != nil {
					return err
				}
				replaced = &old
			case !s.d.IsNoRows(err):
				return err
			}
		}
		_, err := q.Exec(ctx, `INSERT INTO snapshots (`+snapshotCols+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			sn.ID, sn.Name, sn.TeamID, sn.SourceSandboxID, sn.HostID, sn.TemplateID, sn.Alias,
			sn.CPUs, sn.MemoryMiB, sn.DiskMiB, sn.EnvdVersion, sn.SizeBytes, millis(sn.CreatedAt), sn.BuildID)
		return err
	})
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return nil, fmt.Errorf("snapshot %s (name %q): %w", sn.ID, sn.Name, store.ErrConflict)
		}
		return nil, fmt.Errorf("create snapshot %s: %w", sn.ID, err)
	}
	return replaced, nil
}

// Snapshot finds a team's snapshot by ID, then by name.
func (s *Store) Snapshot(ctx context.Context, teamID, idOrName string) (store.Snapshot, error) {
	for _, where := range []string{`id = $2`, `name = $2 AND name <> ''`} {
		sn, err := scanSnapshot(s.db.QueryRow(ctx, `SELECT `+snapshotCols+` FROM snapshots
WHERE team_id = $1 AND `+where, teamID, idOrName))
		if err == nil {
			return sn, nil
		}
		if !s.d.IsNoRows(err) {
			return store.Snapshot{}, fmt.Errorf("snapshot %s: %w", idOrName, err)
		}
	}
	return store.Snapshot{}, fmt.Errorf("snapshot %s: %w", idOrName, store.ErrNotFound)
}

// ListSnapshots pages in SQL, newest first, on (created_at, id) as ListSandboxes does.
func (s *Store) ListSnapshots(ctx context.Context, f store.SnapshotFilter) ([]store.Snapshot, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	var a args
	where := []string{"team_id = " + a.add(f.TeamID)}
	if f.SourceSandboxID != "" {
		where = append(where, "source_sandbox_id = "+a.add(f.SourceSandboxID))
	}
	if f.NameOrID != "" {
		p := a.add(f.NameOrID)
		where = append(where, "(id = "+p+" OR (name = "+p+" AND name <> ''))")
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor, false)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < ("+a.add(c.StartedAt)+", "+a.add(c.ID)+")")
	}
	q := "SELECT " + snapshotCols + " FROM snapshots WHERE " + strings.Join(where, " AND ") +
		" ORDER BY created_at DESC, id DESC LIMIT " + a.add(limit+1)
	rows, err := s.db.Query(ctx, q, a...)
	if err != nil {
		return nil, "", fmt.Errorf("list snapshots: %w", err)
	}
	page, err := collect(rows, scanSnapshot)
	if err != nil {
		return nil, "", fmt.Errorf("list snapshots: %w", err)
	}
	if len(page) <= limit {
		return page, "", nil
	}
	page = page[:limit]
	last := page[limit-1]
	return page, cursor{StartedAt: millis(last.CreatedAt), ID: last.ID}.encode(), nil
}

// DeleteSnapshot removes a snapshot's record.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "snapshots", "snapshot", id)
}
