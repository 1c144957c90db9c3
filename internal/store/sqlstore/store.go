package sqlstore

import (
	"sync"

	"github.com/hearthsh/hearth/internal/store"
)

// Store implements store.Store on a driver's DB and Dialect.
type Store struct {
	db        DB
	d         Dialect
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// New returns a Store on db, which must already be migrated.
func New(db DB, d Dialect) *Store { return &Store{db: db, d: d} }

// Close closes the database; calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}
