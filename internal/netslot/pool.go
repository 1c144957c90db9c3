package netslot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Pool hands out network slots from one address pool. It is safe for
// concurrent use. One Pool per prefix per machine: a Pool considers every
// object carrying its prefix its own.
type Pool struct {
	cfg   Config
	log   *slog.Logger
	table *hostTable

	mu      sync.Mutex
	ready   bool
	indices *indexSet
	slots   map[int]*Slot
}

// New checks cfg and returns a Pool; it touches no kernel state. Call
// Reclaim at agent start; Acquire does it on first use otherwise.
func New(cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Pool{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "netslot", "prefix", cfg.Prefix),
		table:   newHostTable(cfg),
		indices: newIndexSet(cfg.capacity()),
		slots:   map[int]*Slot{},
	}, nil
}

// Config returns the effective configuration (defaults filled in).
func (p *Pool) Config() Config { return p.cfg }

// Acquire builds a slot for sandboxID. On failure nothing of it is left.
func (p *Pool) Acquire(ctx context.Context, sandboxID string, opts ...AcquireOption) (*Slot, error) {
	var o acquireOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.egressErr == nil {
		o.egressErr = p.cfg.checkEgress(o.egress)
	}
	if o.egressErr != nil {
		return nil, fmt.Errorf("acquire slot for %s: %w", sandboxID, o.egressErr)
	}
	p.mu.Lock()
	if !p.ready {
		if err := p.reclaimLocked(ctx); err != nil {
			p.mu.Unlock()
			return nil, err
		}
	}
	i, err := p.indices.take()
	p.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("acquire slot for %s: %w", sandboxID, err)
	}

	s := newSlot(p.cfg, i, sandboxID)
	// Objects of this index may survive a failed Release; clear them first.
	if err := p.clearLeftovers(i); err != nil {
		// Keep the index out of use, as below; Reclaim frees it.
		return nil, fmt.Errorf("acquire slot %d for %s: clear leftovers: %w", i, sandboxID, err)
	}
	if err := p.build(ctx, s, o); err != nil {
		if terr := p.teardown(i); terr != nil {
			// Keep the index out of use: its objects could not be removed.
			p.log.Error("rollback of failed acquire left objects", "slot", i, "err", terr)
			return nil, fmt.Errorf("acquire slot %d for %s: %w (rollback: %v)", i, sandboxID, err, terr)
		}
		p.release(i)
		return nil, fmt.Errorf("acquire slot %d for %s: %w", i, sandboxID, err)
	}
	p.mu.Lock()
	p.slots[i] = s
	p.mu.Unlock()
	p.log.Debug("slot acquired", "slot", i, "sandbox", sandboxID, "guest", s.GuestAddr, "tap", s.TAP != "")
	return s, nil
}

// Release removes every object of the slot and frees its index. If removal
// fails the index stays reserved (a later Reclaim frees it) and the error
// says what is left.
func (p *Pool) Release(ctx context.Context, s *Slot) error {
	if s == nil {
		return errors.New("netslot: release of nil slot")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release slot %d of %s: %w", s.Index, s.SandboxID, err)
	}
	p.mu.Lock()
	if p.slots[s.Index] != s {
		p.mu.Unlock()
		return fmt.Errorf("release slot %d of %s: not held by this pool", s.Index, s.SandboxID)
	}
	delete(p.slots, s.Index)
	p.mu.Unlock()
	// Let a SetEgress in flight finish first: written after the teardown,
	// its policy would outlive the slot.
	s.mu.Lock()
	err := p.teardown(s.Index)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("release slot %d of %s: %w", s.Index, s.SandboxID, err)
	}
	p.release(s.Index)
	p.log.Debug("slot released", "slot", s.Index, "sandbox", s.SandboxID)
	return nil
}

func (p *Pool) release(i int) {
	p.mu.Lock()
	p.indices.put(i)
	p.mu.Unlock()
}

// InUse reports how many slots are held.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.indices.inUse()
}
