package sqlstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/hearthsh/hearth/internal/store"
)

// cursor is a position in the (started_at, id) order of ListSandboxes: the last row of the
// page handed out. It records the direction so that a cursor from a descending listing is
// not silently reused for an ascending one.
type cursor struct {
	Asc       bool   `json:"a"`
	StartedAt int64  `json:"t"`
	ID        string `json:"i"`
}

// encode makes the cursor opaque to callers (URL-safe, so it can travel in a query string).
func (c cursor) encode() string {
	b, _ := json.Marshal(c) // a struct of plain fields always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses a cursor for a listing in the asc direction.
func decodeCursor(s string, asc bool) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("cursor %q: %w", s, store.ErrInvalidCursor)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return cursor{}, fmt.Errorf("cursor %q: %w", s, store.ErrInvalidCursor)
	}
	if c.Asc != asc {
		return cursor{}, fmt.Errorf("cursor %q is for the other sort order: %w", s, store.ErrInvalidCursor)
	}
	return c, nil
}
