package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hearthsh/hearth/internal/store"
)

// templateSelect reads templates with their aliases in one statement, one row per alias (or
// one row with a NULL alias), so a concurrent PutTemplate cannot be seen half done.
const templateSelect = `SELECT t.id, t.cpus, t.memory_mib, t.disk_mib, t.envd_version, t.build_id,
    t.build_status, t.public, t.created_at, t.updated_at, t.team_id, t.artifact, a.alias
FROM templates t LEFT JOIN template_aliases a ON a.template_id = t.id`

// scanTemplates folds templateSelect rows, which must be ordered by template, into templates.
func scanTemplates(rows Rows) ([]store.Template, error) {
	defer rows.Close()
	var out []store.Template
	for rows.Next() {
		var (
			t                store.Template
			created, updated int64
			alias            *string
		)
		if err := rows.Scan(&t.ID, &t.CPUs, &t.MemoryMiB, &t.DiskMiB, &t.EnvdVersion, &t.BuildID,
			&t.BuildStatus, &t.Public, &created, &updated, &t.TeamID, &t.Artifact, &alias); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != t.ID {
			t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
			t.Aliases = []string{}
			out = append(out, t)
		}
		if alias != nil {
			last := &out[len(out)-1]
			last.Aliases = append(last.Aliases, *alias)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// PutTemplate creates or replaces t and its aliases. A replaced template keeps its
// CreatedAt and its team (ErrConflict if t names another); zero times become now. The aliases' primary key turns an alias that belongs to
// another template into ErrConflict, also when two puts race.
func (s *Store) PutTemplate(ctx context.Context, t store.Template) error {
	if t.TeamID == "" {
		return fmt.Errorf("put template %s: %w", t.ID, store.ErrNoTeam)
	}
	aliases, err := uniqueAliases(t.Aliases)
	if err != nil {
		return fmt.Errorf("template %s: %w", t.ID, err)
	}
	ts := now()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = ts
	}
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = ts
	}
	var (
		conflict  string
		otherTeam bool
	)
	err = s.db.Tx(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `INSERT INTO templates (id, cpus, memory_mib, disk_mib, envd_version,
    build_id, build_status, public, created_at, updated_at, team_id, artifact)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET cpus = excluded.cpus, memory_mib = excluded.memory_mib,
    disk_mib = excluded.disk_mib, envd_version = excluded.envd_version,
    build_id = excluded.build_id, build_status = excluded.build_status,
    public = excluded.public, updated_at = excluded.updated_at, artifact = excluded.artifact
WHERE templates.team_id = excluded.team_id`,
			t.ID, t.CPUs, t.MemoryMiB, t.DiskMiB, t.EnvdVersion, t.BuildID, t.BuildStatus, t.Public,
			millis(t.CreatedAt), millis(t.UpdatedAt), t.TeamID, t.Artifact)
		if err != nil {
			return err
		}
		if n == 0 { // the ID is another team's: a template never changes hands
			otherTeam = true
			return store.ErrConflict
		}
		if _, err := q.Exec(ctx, `DELETE FROM template_aliases WHERE template_id = $1`, t.ID); err != nil {
			return err
		}
		for _, a := range aliases {
			if _, err := q.Exec(ctx, `INSERT INTO template_aliases (alias, template_id) VALUES ($1, $2)`, a, t.ID); err != nil {
				if s.d.IsUniqueViolation(err) {
					conflict = a
				}
				return err
			}
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case otherTeam:
		return fmt.Errorf("template %s belongs to another team: %w", t.ID, store.ErrConflict)
	case conflict != "":
		return fmt.Errorf("template %s: alias %q is another template's: %w", t.ID, conflict, store.ErrConflict)
	default:
		return fmt.Errorf("put template %s: %w", t.ID, err)
	}
}

// uniqueAliases drops duplicates and sorts, so the stored set reads back in a stable order.
func uniqueAliases(in []string) ([]string, error) {
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, a := range in {
		if a == "" {
			return nil, errors.New("empty alias")
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Template finds a template by ID, then by alias: an ID wins over an equal alias.
func (s *Store) Template(ctx context.Context, idOrAlias string) (store.Template, error) {
	for _, where := range []string{
		` WHERE t.id = $1`,
		` WHERE t.id = (SELECT template_id FROM template_aliases WHERE alias = $1)`,
	} {
		rows, err := s.db.Query(ctx, templateSelect+where+` ORDER BY a.alias`, idOrAlias)
		if err != nil {
			return store.Template{}, fmt.Errorf("template %s: %w", idOrAlias, err)
		}
		ts, err := scanTemplates(rows)
		if err != nil {
			return store.Template{}, fmt.Errorf("template %s: %w", idOrAlias, err)
		}
		if len(ts) == 1 {
			return ts[0], nil
		}
	}
	return store.Template{}, fmt.Errorf("template %s: %w", idOrAlias, store.ErrNotFound)
}

// ListTemplates returns every template, oldest first.
func (s *Store) ListTemplates(ctx context.Context) ([]store.Template, error) {
	rows, err := s.db.Query(ctx, templateSelect+` ORDER BY t.created_at, t.id, a.alias`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	ts, err := scanTemplates(rows)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return ts, nil
}

// DeleteTemplate removes the template; its aliases go with it (ON DELETE CASCADE).
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "templates", "template", id)
}
