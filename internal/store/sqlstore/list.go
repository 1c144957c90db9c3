package sqlstore

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hearthsh/hearth/internal/store"
)

// Page sizes of ListSandboxes.
const (
	defaultLimit = 100
	maxLimit     = 100
)

// args numbers placeholders as arguments are added.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// ListSandboxes filters and pages in SQL, so that a page is full whenever more rows match
// and the cursor (the last row's position in the (started_at, id) order) stays exact.
func (s *Store) ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]store.Sandbox, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)

	var (
		a     args
		where []string
	)
	if f.TeamID != "" {
		where = append(where, "team_id = "+a.add(f.TeamID))
	}
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			ph[i] = a.add(st)
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	if f.Template != "" {
		where = append(where, "template_id = "+a.add(f.Template))
	}
	if f.HostID != "" {
		where = append(where, "host_id = "+a.add(f.HostID))
	}
	if !f.StartedAfter.IsZero() {
		where = append(where, "started_at >= "+a.add(millis(f.StartedAfter)))
	}
	keys := make([]string, 0, len(f.Metadata))
	for k := range f.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same filter always yields the same SQL
	for _, k := range keys {
		where = append(where, s.d.MetadataValue(a.add(s.d.MetadataKey(k)))+" = "+a.add(f.Metadata[k]))
	}
	op, dir := "<", "DESC"
	if f.Ascending {
		op, dir = ">", "ASC"
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor, f.Ascending)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(started_at, id) "+op+" ("+a.add(c.StartedAt)+", "+a.add(c.ID)+")")
	}

	q := "SELECT " + sandboxCols + " FROM sandboxes"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether another page follows.
	q += " ORDER BY started_at " + dir + ", id " + dir + " LIMIT " + a.add(limit+1)

	rows, err := s.db.Query(ctx, q, a...)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	page, err := collect(rows, scanSandbox)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	if len(page) <= limit {
		return page, "", nil
	}
	page = page[:limit]
	last := page[limit-1]
	return page, cursor{Asc: f.Ascending, StartedAt: millis(last.StartedAt), ID: last.ID}.encode(), nil
}
