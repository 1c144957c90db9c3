// Package conntrack tracks the proxied connections of every sandbox so that
// pausing, forking or stopping one can drain them: refuse new connections,
// end long-lived streams at once, give requests in flight a grace period,
// then cancel and close what is left. The agent's proxy calls Track for each
// request it forwards to a sandbox and marks the ones that turn out to be
// streams; the sandbox manager calls Drain before a pause, fork or stop and
// Resume when the sandbox runs again.
//
// Why streams are told apart: a WebSocket, a command's output stream or a
// file watcher never ends by itself, so waiting for it only spends the whole
// grace period and then cuts it anyway. A stream is ended at once instead,
// with an end its client understands (see proxy.Upstream.OnStream), while a
// plain request that is being answered still gets the grace to complete.
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
	// drain is the policy of the drain in progress, for streams that are
	// marked while it runs.
	drain Policy
	conns map[*Conn]struct{}
	// changed is closed, and replaced, whenever a connection leaves, so
	// Drain can wait for the count to reach zero without polling.
	changed chan struct{}
}

// Conn is one tracked request (and the WebSocket it may upgrade to).
type Conn struct {
	t      *Tracker
	id     string
	port   uint16
	conn   net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	// Guarded by t.mu.
	end   func(reason string) // set by Streaming
	ended bool
}

// Policy says how Drain treats a sandbox's connections.
type Policy struct {
	// Grace is how long requests in flight get to finish before they are
	// force-closed.
	Grace time.Duration
	// EndReason, when set, makes Drain end every stream at once through the
	// function it registered with Streaming, with this reason (a pause or a
	// fork: the processes behind the streams go on). When empty, streams are
	// force-closed with the rest after Grace (a kill: the SDKs recognise a
	// cut connection to a sandbox that is gone).
	EndReason string
	// Port, when nonzero, limits the drain to connections to that port: a
	// fork disturbs only envd's host socket, and other ports of the sandbox
	// stay open across it.
	Port uint16
	// EndGrace is how long an ended stream has to finish before it is closed
	// (default DefaultEndGrace): a WebSocket client that never answers the
	// close frame must not hold the drain for the whole Grace.
	EndGrace time.Duration
}

// DefaultEndGrace lets an ended stream deliver the message in flight and its
// end, and a WebSocket client answer the close frame.
const DefaultEndGrace = 1500 * time.Millisecond

// get returns the entry of id, creating it; t.mu must be held.
func (t *Tracker) get(id string) *sandbox {
	if t.sandboxes == nil {
		t.sandboxes = map[string]*sandbox{}
	}
	sb := t.sandboxes[id]
	if sb == nil {
		sb = &sandbox{conns: map[*Conn]struct{}{}, changed: make(chan struct{})}
		t.sandboxes[id] = sb
	}
	return sb
}

// Track registers c as a connection to port of sandboxID. The Conn's
// context is derived from parent and is cancelled when the connection is
// force-closed; the proxy uses it for the upstream side. The caller must
// call Done when it has finished with c (Done is idempotent and does not
// close c). Track fails with ErrDraining while the sandbox drains, and with
// parent's error if parent is already done.
func (t *Tracker) Track(sandboxID string, port uint16, parent context.Context, c net.Conn) (*Conn, error) {
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("track connection to %s: %w", sandboxID, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	sb := t.get(sandboxID)
	if sb.draining {
		return nil, fmt.Errorf("track connection to %s: %w", sandboxID, ErrDraining)
	}
	ctx, cancel := context.WithCancel(parent)
	tc := &Conn{t: t, id: sandboxID, port: port, conn: c, ctx: ctx, cancel: cancel}
	sb.conns[tc] = struct{}{}
	return tc, nil
}

// Context is cancelled when the connection is force-closed.
func (c *Conn) Context() context.Context { return c.ctx }

// Done unregisters the connection.
func (c *Conn) Done() {
	c.once.Do(func() {
		c.cancel()
		t := c.t
		t.mu.Lock()
		defer t.mu.Unlock()
		// The sandbox may have been forgotten and tracked anew: only remove
		// c from the entry that still holds it.
		if cur := t.sandboxes[c.id]; cur != nil {
			if _, ok := cur.conns[c]; ok {
				delete(cur.conns, c)
				cur.notify()
			}
		}
	})
}

// Streaming marks the connection as a long-lived stream and registers end,
// which must make the stream finish promptly with an end its client
// understands. A drain that ends streams calls end once, from its own
// goroutine; if such a drain is already running, end is called at once.
func (c *Conn) Streaming(end func(reason string)) {
	t := c.t
	t.mu.Lock()
	c.end = end
	var reason string
	if sb := t.sandboxes[c.id]; sb != nil && sb.draining && sb.drain.EndReason != "" && sb.drain.covers(c) {
		if _, ok := sb.conns[c]; ok {
			reason = sb.drain.EndReason
			c.ended = true
		}
	}
	t.mu.Unlock()
	if reason != "" {
		end(reason)
	}
}

func (p Policy) covers(c *Conn) bool { return p.Port == 0 || p.Port == c.port }

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

// Drain stops new connections to sandboxID and applies p to the open ones:
// streams are ended at once (with p.EndReason), requests in flight get up to
// p.Grace to finish, then whatever is left is force-closed. It returns how
// many it force-closed. The sandbox stays draining until Resume or Forget.
// If ctx ends first, Drain returns its error without closing anything; the
// sandbox stays draining so the caller can decide (retry, ForceClose or
// Resume).
func (t *Tracker) Drain(ctx context.Context, sandboxID string, p Policy) (forced int, err error) {
	t.mu.Lock()
	sb := t.get(sandboxID)
	sb.draining, sb.drain = true, p
	var ends []func(string)
	if p.EndReason != "" {
		for c := range sb.conns {
			if c.end != nil && !c.ended && p.covers(c) {
				c.ended = true
				ends = append(ends, c.end)
			}
		}
	}
	t.mu.Unlock()
	for _, end := range ends {
		end(p.EndReason)
	}

	timer := time.NewTimer(p.Grace)
	defer timer.Stop()
	var endTimer <-chan time.Time
	if len(ends) > 0 {
		if p.EndGrace <= 0 {
			p.EndGrace = DefaultEndGrace
		}
		et := time.NewTimer(p.EndGrace)
		defer et.Stop()
		endTimer = et.C
	}
	for {
		t.mu.Lock()
		sb := t.get(sandboxID)
		n, changed := sb.count(p), sb.changed
		t.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-changed:
		case <-endTimer:
			// Ended streams whose clients did not let go: closed, not counted as forced.
			t.mu.Lock()
			victims := t.take(sandboxID, func(c *Conn) bool { return c.ended && p.covers(c) })
			t.mu.Unlock()
			closeAll(victims)
			endTimer = nil
		case <-timer.C:
			return t.forceClose(sandboxID, p), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("drain %s: %d connections still open: %w", sandboxID, n, ctx.Err())
		}
	}
}

// count is the number of open connections p covers; t.mu must be held.
func (sb *sandbox) count(p Policy) int {
	if p.Port == 0 {
		return len(sb.conns)
	}
	n := 0
	for c := range sb.conns {
		if p.covers(c) {
			n++
		}
	}
	return n
}

// ForceClose cancels the contexts of every open connection of sandboxID
// and closes the connections, so reads and writes on them fail at once and
// the peers see the close. It returns how many it closed; they no longer
// count as open. It does not change whether the sandbox is draining.
func (t *Tracker) ForceClose(sandboxID string) int {
	return t.forceClose(sandboxID, Policy{})
}

func (t *Tracker) forceClose(sandboxID string, p Policy) int {
	t.mu.Lock()
	victims := t.take(sandboxID, p.covers)
	t.mu.Unlock()
	return closeAll(victims)
}

// Resume makes sandboxID accept connections again, after a pause is rolled
// back, a fork is done or the sandbox resumed.
func (t *Tracker) Resume(sandboxID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sb := t.sandboxes[sandboxID]; sb != nil {
		sb.draining, sb.drain = false, Policy{}
	}
}

// Forget force-closes whatever is left of sandboxID and drops its state,
// for a sandbox that is gone.
func (t *Tracker) Forget(sandboxID string) {
	t.mu.Lock()
	victims := t.take(sandboxID, Policy{}.covers)
	delete(t.sandboxes, sandboxID)
	t.mu.Unlock()
	closeAll(victims)
}

// take removes and returns the open connections of id that match; t.mu must be held.
func (t *Tracker) take(id string, match func(*Conn) bool) []*Conn {
	sb := t.sandboxes[id]
	if sb == nil {
		return nil
	}
	var victims []*Conn
	for c := range sb.conns {
		if match(c) {
			victims = append(victims, c)
			delete(sb.conns, c)
		}
	}
	if len(victims) > 0 {
		sb.notify()
	}
	return victims
}

// closeAll runs outside the lock: Close may block (a TLS close_notify, say)
// and the handlers' Done calls need the lock.
func closeAll(victims []*Conn) int {
	for _, c := range victims {
		c.cancel()
		if c.conn != nil {
			c.conn.Close()
		}
	}
	return len(victims)
}
