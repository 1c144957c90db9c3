package sqlstore

import (
	"context"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

// SetTemplateTag creates or moves a tag, in one statement: two replicas moving one tag at
// once leave it on one of the two builds, never on neither.
func (s *Store) SetTemplateTag(ctx context.Context, t store.TemplateTag) error {
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	n, err := s.db.Exec(ctx, `INSERT INTO template_tags (template_id, tag, build_id, created_at)
SELECT id, $2, $3, $4 FROM templates WHERE id = $1
ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id, created_at = excluded.created_at`,
		t.TemplateID, t.Tag, t.BuildID, millis(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("set tag %s of template %s: %w", t.Tag, t.TemplateID, err)
	}
	if n == 0 {
		return fmt.Errorf("set tag %s: template %s: %w", t.Tag, t.TemplateID, store.ErrNotFound)
	}
	return nil
}

func scanTag(r Row) (store.TemplateTag, error) {
	var t store.TemplateTag
	var created int64
	if err := r.Scan(&t.TemplateID, &t.Tag, &t.BuildID, &created); err != nil {
		return t, err
	}
	t.CreatedAt = fromMillis(created)
	return t, nil
}

// TemplateTag returns tag of template templateID.
func (s *Store) TemplateTag(ctx context.Context, templateID, tag string) (store.TemplateTag, error) {
	t, err := scanTag(s.db.QueryRow(ctx, `SELECT template_id, tag, build_id, created_at FROM template_tags
WHERE template_id = $1 AND tag = $2`, templateID, tag))
	if err != nil {
		if s.d.IsNoRows(err) {
			return store.TemplateTag{}, fmt.Errorf("tag %s of template %s: %w", tag, templateID, store.ErrNotFound)
		}
		return store.TemplateTag{}, fmt.Errorf("tag %s of template %s: %w", tag, templateID, err)
	}
	return t, nil
}

// ListTemplateTags returns the template's tags in tag order.
func (s *Store) ListTemplateTags(ctx context.Context, templateID string) ([]store.TemplateTag, error) {
	rows, err := s.db.Query(ctx, `SELECT template_id, tag, build_id, created_at FROM template_tags
WHERE template_id = $1 ORDER BY tag`, templateID)
	if err != nil {
		return nil, fmt.Errorf("list tags of template %s: %w", templateID, err)
	}
	ts, err := collect(rows, scanTag)
	if err != nil {
		return nil, fmt.Errorf("list tags of template %s: %w", templateID, err)
	}
	return ts, nil
}

// DeleteTemplateTag removes one tag.
func (s *Store) DeleteTemplateTag(ctx context.Context, templateID, tag string) error {
	n, err := s.db.Exec(ctx, `DELETE FROM template_tags WHERE template_id = $1 AND tag = $2`, templateID, tag)
	if err != nil {
		return fmt.Errorf("delete tag %s of template %s: %w", tag, templateID, err)
	}
	if n == 0 {
		return fmt.Errorf("tag %s of template %s: %w", tag, templateID, store.ErrNotFound)
	}
	return nil
}

// TemplateBuildUsers counts the tags, sandboxes and snapshots that name the build.
func (s *Store) TemplateBuildUsers(ctx context.Context, buildID string) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, `SELECT
    (SELECT COUNT(*) FROM template_tags WHERE build_id = $1) +
    (SELECT COUNT(*) FROM sandboxes WHERE build_id = $1) +
    (SELECT COUNT(*) FROM snapshots WHERE build_id = $1)`, buildID).Scan(&n); err != nil {
		return 0, fmt.Errorf("users of build %s: %w", buildID, err)
	}
	return n, nil
}
