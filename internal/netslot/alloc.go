package netslot

import "errors"

// ErrExhausted is returned by Acquire when every /30 of the pool is in use.
var ErrExhausted = errors.New("netslot: address pool exhausted")

// indexSet hands out the lowest free slot index, so indices (and with them
// addresses and interface names) are reused after release. Not safe for
// concurrent use; Pool guards it.
type indexSet struct {
	used []bool
	n    int
}

func newIndexSet(capacity int) *indexSet { return &indexSet{used: make([]bool, capacity)} }

func (s *indexSet) take() (int, error) {
	for i, u := range s.used {
		if !u {
			s.used[i] = true
			s.n++
			return i, nil
		}
	}
	return 0, ErrExhausted
}

func (s *indexSet) put(i int) {
	if i >= 0 && i < len(s.used) && s.used[i] {
		s.used[i] = false
		s.n--
	}
}

func (s *indexSet) inUse() int { return s.n }
