// Package conntrack tracks the proxied connections of every sandbox so that
// pausing or stopping one can drain them: refuse new connections, give open
// ones a grace period, then cancel and close what is left. The agent's proxy
// calls Track for each connection it forwards to a sandbox; the sandbox
// manager calls Drain before a pause or stop and Resume when a pause rolls
// back or the sandbox runs again.
package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrDraining is returned by Track while a sandbox is draining. Callers
// report it as HTTP 409 Conflict (Connect failed_precondition).
var ErrDraining = errors.New("sandbox is draining: not accepting new connections")

// Tracker holds the open connections of all sandboxes. The zero value is
// ready to use; it is safe for concurrent use.
type Tracker struct {
	mu        sync.Mutex
	sandboxes map[string]*sandbox
}

type sandbox struct {
	draining bool
	conns    map[*tracked]struct{}
	// changed is closed, and replaced, whenever a connection leaves, so
	// Drain can wait for the count to reach zero without polling.
	changed chan struct{}
}

type tracked struct {
	conn   net.Conn
	cancel context.CancelFunc
}

// get returns the entry of id, creating it; t.mu must be held.
func (t *Tracker) get(id string) *sandbox {
	if t.sandboxes == nil {
		t.sandboxes = map[string]*sandbox{}
	}
	sb := t.sandboxes[id]
	if sb == nil {
		sb = &sandbox{conns: map[*tracked]struct{}{}, changed: make(chan struct{})}
		t.sandboxes[id] = sb
	}
	return sb
}

// Track registers c as a connection to sandboxID. The returned context is
// derived from parent and is cancelled when the connection is force-closed;
// the proxy uses it for the upstream side. The caller must call done when it
// has finished with c (done is idempotent and does not close c). Track fails
// with ErrDraining while the sandbox drains, and with parent's error if
// parent is already done.
func (t *Tracker) Track(sandboxID string, parent context.Context, c net.Conn) (ctx context.Context, done func(), err error) {
	if err := parent.Err(); err != nil {
		return nil, nil, fmt.Errorf("track connection to %s: %w", sandboxID, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	sb := t.get(sandboxID)
	if sb.draining {
		return nil, nil, fmt.Errorf("track connection to %s: %w", sandboxID, ErrDraining)
	}
	ctx, cancel := context.WithCancel(parent)
	tc := &tracked{conn: c, cancel: cancel}
	sb.conns[tc] = struct{}{}
	var once sync.Once
	done = func() {
		once.Do(func() {
			cancel()
			t.mu.Lock()
			defer t.mu.Unlock()
			// The sandbox may have been forgotten and tracked anew: only
			// remove tc from the entry that still holds it.
			if cur := t.sandboxes[sandboxID]; cur != nil {
				if _, ok := cur.conns[tc]; ok {
					delete(cur.conns, tc)
					cur.notify()
				}
			}
		})
	}
	return ctx, done, nil
}

// notify wakes Drain waiters; t.mu must be held.
func (sb *sandbox) notify() {
	close(sb.changed)
	sb.changed = make(chan struct{})
}

// Count returns the number of open tracked connections of sandboxID.
func (t *Tracker) Count(sandboxID string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sb := t.sandboxes[sandboxID]; sb != nil {
		return len(sb.conns)
	}
	return 0
}

// Draining reports whether sandboxID refuses new connections.
func (t *Tracker) Draining(sandboxID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	sb := t.sandboxes[sandboxID]
	return sb != nil && sb.draining
}

// Drain stops new connections to sandboxID, waits up to grace for the open
// ones to finish, then force-closes the rest and returns how many it closed.
// The sandbox stays draining until Resume or Forget. If ctx ends first,
// Drain returns its error without closing anything; the sandbox stays
// draining so the caller can decide (retry, ForceClose or Resume).
func (t *Tracker) Drain(ctx context.Context, sandboxID string, grace time.Duration) (forced int, err error) {
	t.mu.Lock()
	t.get(sandboxID).draining = true
	t.mu.Unlock()

	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		t.mu.Lock()
		sb := t.get(sandboxID)
		n, changed := len(sb.conns), sb.changed
		t.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return t.ForceClose(sandboxID), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("drain %s: %d connections still open: %w", sandboxID, n, ctx.Err())
		}
	}
}

// ForceClose cancels the contexts of every open connection of sandboxID
// and closes the connections, so reads and writes on them fail at once and
// the peers see the close. It returns how many it closed; they no longer
// count as open. It does not change whether the sandbox is draining.
func (t *Tracker) ForceClose(sandboxID string) int {
	t.mu.Lock()
	victims := t.takeAll(sandboxID)
	t.mu.Unlock()
	return closeAll(victims)
}

// Resume makes sandboxID accept connections again, after a pause is rolled
// back or the sandbox resumed.
func (t *Tracker) Resume(sandboxID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sb := t.sandboxes[sandboxID]; sb != nil {
		sb.draining = false
	}
}

// Forget force-closes whatever is left of sandboxID and drops its state,
// for a sandbox that is gone.
func (t *Tracker) Forget(sandboxID string) {
	t.mu.Lock()
	victims := t.takeAll(sandboxID)
	delete(t.sandboxes, sandboxID)
	t.mu.Unlock()
	closeAll(victims)
}

// takeAll removes and returns the open connections of id; t.mu must be held.
func (t *Tracker) takeAll(id string) []*tracked {
	sb := t.sandboxes[id]
	if sb == nil || len(sb.conns) == 0 {
		return nil
	}
	victims := make([]*tracked, 0, len(sb.conns))
	for tc := range sb.conns {
		victims = append(victims, tc)
	}
	clear(sb.conns)
	sb.notify()
	return victims
}

// closeAll runs outside the lock: Close may block (a TLS close_notify, say)
// and the handlers' done calls need the lock.
func closeAll(victims []*tracked) int {
	for _, tc := range victims {
		tc.cancel()
		tc.conn.Close()
	}
	return len(victims)
}
