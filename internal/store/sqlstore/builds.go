package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

const buildCols = `id, template_id, team_id, status, host_id, recipe, reason, reason_step, cpus,
    memory_mib, version, created_at, updated_at, finished_at, agent_template, artifact, tags, deleted_at`

func scanBuild(r Row) (store.TemplateBuild, error) {
	var (
		b                                   store.TemplateBuild
		created, updated, finished, deleted int64
		tags                                string
	)
	if err := r.Scan(&b.ID, &b.TemplateID, &b.TeamID, &b.Status, &b.HostID, &b.Recipe, &b.Reason, &b.ReasonStep,
		&b.CPUs, &b.MemoryMiB, &b.Version, &created, &updated, &finished, &b.AgentTemplate, &b.Artifact, &tags, &deleted); err != nil {
		return store.TemplateBuild{}, err
	}
	b.CreatedAt, b.UpdatedAt = fromMillis(created), fromMillis(updated)
	if finished != 0 {
		b.FinishedAt = fromMillis(finished)
	}
	if deleted != 0 {
		b.DeletedAt = fromMillis(deleted)
	}
	var err error
	if b.Tags, err = decodeList(tags); err != nil {
		return store.TemplateBuild{}, fmt.Errorf("build %s tags: %w", b.ID, err)
	}
	if len(b.Tags) == 0 {
		b.Tags = nil // as written: none asked for
	}
	return b, nil
}

func buildArgs(b store.TemplateBuild) ([]any, error) {
	var finished, deleted int64
	if !b.FinishedAt.IsZero() {
		finished = millis(b.FinishedAt)
	}
	if !b.DeletedAt.IsZero() {
		deleted = millis(b.DeletedAt)
	}
	tags, err := encodeList(b.Tags)
	if err != nil {
		return nil, fmt.Errorf("build %s tags: %w", b.ID, err)
	}
	return []any{b.ID, b.TemplateID, b.TeamID, b.Status, b.HostID, b.Recipe, b.Reason, b.ReasonStep,
		b.CPUs, b.MemoryMiB, b.Version, millis(b.CreatedAt), millis(b.UpdatedAt), finished,
		b.AgentTemplate, b.Artifact, tags, deleted}, nil
}

// CreateTemplateBuild records b; zero times become now.
func (s *Store) CreateTemplateBuild(ctx context.Context, b store.TemplateBuild) error {
	ts := now()
	if b.CreatedAt.IsZero() {
		b.CreatedAt = ts
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = ts
	}
	args, err := buildArgs(b)
	if err != nil {
		return fmt.Errorf("create template build: %w", err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO template_builds (`+buildCols+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`, args...)
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return fmt.Errorf("template build %s: %w", b.ID, store.ErrConflict)
		}
		return fmt.Errorf("create template build %s: %w", b.ID, err)
	}
	return nil
}

// TemplateBuild returns the build with this ID.
func (s *Store) TemplateBuild(ctx context.Context, id string) (store.TemplateBuild, error) {
	b, err := scanBuild(s.db.QueryRow(ctx, `SELECT `+buildCols+` FROM template_builds WHERE id = $1`, id))
	if err != nil {
		if s.d.IsNoRows(err) {
			return store.TemplateBuild{}, fmt.Errorf("template build %s: %w", id, store.ErrNotFound)
		}
		return store.TemplateBuild{}, fmt.Errorf("template build %s: %w", id, err)
	}
	return b, nil
}

// UpdateTemplateBuild applies fn to the build under the row lock. UpdatedAt becomes now.
func (s *Store) UpdateTemplateBuild(ctx context.Context, id string, fn func(*store.TemplateBuild) error) (store.TemplateBuild, error) {
	var out store.TemplateBuild
	err := s.db.Tx(ctx, func(q Querier) error {
		cur, err := scanBuild(q.QueryRow(ctx, `SELECT `+buildCols+` FROM template_builds WHERE id = $1 `+s.d.ForUpdate, id))
		if err != nil {
			if s.d.IsNoRows(err) {
				return fmt.Errorf("template build %s: %w", id, store.ErrNotFound)
			}
			return fmt.Errorf("read template build %s: %w", id, err)
		}
		next := cur
		if err := fn(&next); err != nil {
			return fnError{err}
		}
		next.ID, next.CreatedAt, next.UpdatedAt = id, cur.CreatedAt, now()
		args, err := buildArgs(next)
		if err != nil {
			return fmt.Errorf("update template build: %w", err)
		}
		if _, err := q.Exec(ctx, `UPDATE template_builds SET template_id = $2, team_id = $3, status = $4,
    host_id = $5, recipe = $6, reason = $7, reason_step = $8, cpus = $9, memory_mib = $10,
    version = $11, created_at = $12, updated_at = $13, finished_at = $14, agent_template = $15,
    artifact = $16, tags = $17, deleted_at = $18
WHERE id = $1`, args...); err != nil {
			return fmt.Errorf("update template build %s: %w", id, err)
		}
		out = next
		return nil
	})
	if fe := (fnError{}); errors.As(err, &fe) {
		return store.TemplateBuild{}, fe.err
	}
	if err != nil {
		return store.TemplateBuild{}, err
	}
	return out, nil
}

// ListTemplateBuilds returns the template's builds, newest first.
func (s *Store) ListTemplateBuilds(ctx context.Context, templateID string) ([]store.TemplateBuild, error) {
	rows, err := s.db.Query(ctx, `SELECT `+buildCols+` FROM template_builds WHERE template_id = $1
ORDER BY created_at DESC, id DESC`, templateID)
	if err != nil {
		return nil, fmt.Errorf("list builds of template %s: %w", templateID, err)
	}
	bs, err := collect(rows, scanBuild)
	if err != nil {
		return nil, fmt.Errorf("list builds of template %s: %w", templateID, err)
	}
	return bs, nil
}

// AppendBuildLogs inserts entries in one transaction.
func (s *Store) AppendBuildLogs(ctx context.Context, buildID string, entries []store.BuildLogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	err := s.db.Tx(ctx, func(q Querier) error {
		for _, e := range entries {
			if _, err := q.Exec(ctx, `INSERT INTO template_build_logs (build_id, seq, ts, level, step, message)
VALUES ($1, $2, $3, $4, $5, $6)`, buildID, e.Seq, millis(e.Time), e.Level, e.Step, e.Message); err != nil {
				if s.d.IsUniqueViolation(err) {
					return fmt.Errorf("build %s log entry %d: %w", buildID, e.Seq, store.ErrConflict)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append build log %s: %w", buildID, err)
	}
	return nil
}

// BuildLogs returns up to limit entries from seq offset on, in order.
func (s *Store) BuildLogs(ctx context.Context, buildID string, offset, limit int) ([]store.BuildLogEntry, error) {
	rows, err := s.db.Query(ctx, `SELECT seq, ts, level, step, message FROM template_build_logs
WHERE build_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3`, buildID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("build log %s: %w", buildID, err)
	}
	es, err := collect(rows, func(r Row) (store.BuildLogEntry, error) {
		var e store.BuildLogEntry
		var ts int64
		if err := r.Scan(&e.Seq, &ts, &e.Level, &e.Step, &e.Message); err != nil {
			return e, err
		}
		e.Time = fromMillis(ts)
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("build log %s: %w", buildID, err)
	}
	return es, nil
}
