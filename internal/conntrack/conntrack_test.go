package conntrack

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// connPair returns both ends of a real loopback TCP connection: the proxy's
// side (tracked) and the client's side (observes closes).
func connPair(t *testing.T) (proxySide, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	proxySide = <-accepted
	if proxySide == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { proxySide.Close(); client.Close() })
	return proxySide, client
}

// handler stands in for a proxied request: it holds its connection until
// finish is closed or its context is cancelled, then calls done.
type handler struct {
	ctx      context.Context
	finish   chan struct{}
	finished chan struct{}
}

func startHandler(t *testing.T, tr *Tracker, id string) (*handler, net.Conn) {
	t.Helper()
	proxySide, client := connPair(t)
	c, err := tr.Track(id, 0, context.Background(), proxySide)
	if err != nil {
		t.Fatalf("Track: %v", err)
	}
	h := &handler{ctx: c.Context(), finish: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(h.finished)
		defer c.Done()
		select {
		case <-h.finish:
		case <-c.Context().Done():
		}
	}()
	return h, client
}

func TestDrain(t *testing.T) {
	tests := []struct {
		name       string
		conns      int
		finishIn   time.Duration // handlers end on their own after this; 0 = never
		grace      time.Duration
		wantForced int
	}{
		{"no connections", 0, 0, time.Second, 0},
		{"connections finish within grace", 3, 50 * time.Millisecond, 5 * time.Second, 0},
		{"connections outlive grace", 3, 0, 200 * time.Millisecond, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			var handlers []*handler
			var clients []net.Conn
			for range tc.conns {
				h, c := startHandler(t, &tr, "sbx")
				handlers = append(handlers, h)
				clients = append(clients, c)
			}
			if got := tr.Count("sbx"); got != tc.conns {
				t.Fatalf("Count = %d, want %d", got, tc.conns)
			}
			if tc.finishIn > 0 {
				time.AfterFunc(tc.finishIn, func() {
					for _, h := range handlers {
						close(h.finish)
					}
				})
			}

			start := time.Now()
			forced, err := tr.Drain(context.Background(), "sbx", Policy{Grace: tc.grace})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if forced != tc.wantForced {
				t.Fatalf("Drain force-closed %d, want %d", forced, tc.wantForced)
			}
			if tc.wantForced == 0 && elapsed > tc.grace/2 {
				t.Errorf("Drain took %v though connections finished early", elapsed)
			}
			if tc.wantForced > 0 && elapsed < tc.grace {
				t.Errorf("Drain force-closed after %v, before the %v grace", elapsed, tc.grace)
			}
			if got := tr.Count("sbx"); got != 0 {
				t.Errorf("Count after Drain = %d", got)
			}
			if tc.wantForced > 0 {
				// The clients see the close: their reads end promptly
				// (measured loosely: within grace + 1s of the drain start).
				deadline := start.Add(tc.grace + time.Second)
				for i, c := range clients {
					c.SetReadDeadline(deadline)
					_, err := c.Read(make([]byte, 1))
					var ne net.Error
					if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
						t.Errorf("client %d: read after force-close: %v, want EOF or reset", i, err)
					}
				}
				for i, h := range handlers {
					select {
					case <-h.ctx.Done():
					default:
						t.Errorf("handler %d: context not cancelled", i)
					}
					<-h.finished
				}
			}
		})
	}
}

func TestTrackRefusedWhileDrainingUntilResume(t *testing.T) {
	var tr Tracker
	h, _ := startHandler(t, &tr, "sbx")
	other, _ := startHandler(t, &tr, "other")

	drained := make(chan error, 1)
	go func() {
		_, err := tr.Drain(context.Background(), "sbx", Policy{Grace: 5 * time.Second})
		drained <- err
	}()
	waitFor(t, func() bool { return tr.Draining("sbx") })

	proxySide, _ := connPair(t)
	if _, err := tr.Track("sbx", 0, context.Background(), proxySide); !errors.Is(err, ErrDraining) {
		t.Fatalf("Track during drain: %v, want ErrDraining", err)
	}
	if got := tr.Count("sbx"); got != 1 {
		t.Fatalf("Count = %d after refused Track, want 1", got)
	}
	// Other sandboxes are unaffected.
	if c, err := tr.Track("other", 0, context.Background(), proxySide); err != nil {
		t.Fatalf("Track on another sandbox: %v", err)
	} else {
		c.Done()
	}

	close(h.finish)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := tr.Track("sbx", 0, context.Background(), proxySide); !errors.Is(err, ErrDraining) {
		t.Fatalf("Track after drain, before Resume: %v, want ErrDraining", err)
	}
	tr.Resume("sbx")
	c, err := tr.Track("sbx", 0, context.Background(), proxySide)
	if err != nil {
		t.Fatalf("Track after Resume: %v", err)
	}
	c.Done()
	c.Done() // idempotent
	if got := tr.Count("sbx"); got != 0 {
		t.Fatalf("Count = %d after done", got)
	}
	close(other.finish)
	<-other.finished
}

func TestDrainHonoursContext(t *testing.T) {
	var tr Tracker
	h, _ := startHandler(t, &tr, "sbx")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := tr.Drain(ctx, "sbx", Policy{Grace: time.Minute}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v, want deadline exceeded", err)
	}
	select {
	case <-h.ctx.Done():
		t.Fatal("connection closed though Drain was abandoned")
	default:
	}
	if !tr.Draining("sbx") {
		t.Error("sandbox no longer draining after an abandoned Drain")
	}
	tr.Resume("sbx")
	close(h.finish)
	<-h.finished
}

func TestForgetClosesAndResets(t *testing.T) {
	var tr Tracker
	h, client := startHandler(t, &tr, "sbx")
	tr.Drain(context.Background(), "sbx", Policy{Grace: 0})
	tr.Forget("sbx")
	<-h.finished
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read succeeded after Forget")
	}
	if tr.Draining("sbx") || tr.Count("sbx") != 0 {
		t.Fatal("Forget kept state")
	}
	proxySide, _ := connPair(t)
	if c, err := tr.Track("sbx", 0, context.Background(), proxySide); err != nil {
		t.Fatalf("Track after Forget: %v", err)
	} else {
		c.Done()
	}
}

func TestTrackWithDoneParent(t *testing.T) {
	var tr Tracker
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	proxySide, _ := connPair(t)
	if _, err := tr.Track("sbx", 0, ctx, proxySide); !errors.Is(err, context.Canceled) {
		t.Fatalf("Track: %v, want context.Canceled", err)
	}
	if tr.Count("sbx") != 0 {
		t.Fatal("refused connection counted")
	}
}

// TestConcurrentTrackAndDrain is for the race detector and the leak check:
// many connections come and go while the sandbox drains and resumes.
func TestConcurrentTrackAndDrain(t *testing.T) {
	before := runtime.NumGoroutine()
	var tr Tracker
	proxySide, _ := connPair(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				c, err := tr.Track("sbx", 0, context.Background(), nopCloseConn{proxySide})
				if err == nil {
					c.Done()
				} else if !errors.Is(err, ErrDraining) {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 20 {
		if _, err := tr.Drain(context.Background(), "sbx", Policy{Grace: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		tr.Resume("sbx")
	}
	wg.Wait()
	tr.ForceClose("sbx")
	if tr.Count("sbx") != 0 {
		t.Fatalf("Count = %d", tr.Count("sbx"))
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before+2 })
}

// nopCloseConn keeps the shared test connection open when force-closed.
type nopCloseConn struct{ net.Conn }

func (nopCloseConn) Close() error { return nil }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDrainEndsStreamsAtOnce is the pause rule: a stream is ended through its
// end function at once, with the drain's reason, while a plain request in
// flight is still given the grace to finish.
func TestDrainEndsStreamsAtOnce(t *testing.T) {
	var tr Tracker
	stream, _ := startHandler(t, &tr, "sbx")
	var mu sync.Mutex
	var reasons []string
	tracked := trackedOf(t, &tr, "sbx", stream)
	tracked.Streaming(func(reason string) {
		mu.Lock()
		reasons = append(reasons, reason)
		mu.Unlock()
		close(stream.finish) // the stream's handler returns
	})
	plain, _ := startHandler(t, &tr, "sbx")
	time.AfterFunc(300*time.Millisecond, func() { close(plain.finish) })

	start := time.Now()
	forced, err := tr.Drain(context.Background(), "sbx", Policy{Grace: 5 * time.Second, EndReason: "pausing"})
	if err != nil || forced != 0 {
		t.Fatalf("Drain = %d, %v; want 0 forced", forced, err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 4*time.Second {
		t.Errorf("Drain took %v: it must wait for the plain request (300 ms) and no longer", el)
	}
	<-stream.finished
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 1 || reasons[0] != "pausing" {
		t.Fatalf("stream ended with %q, want once with \"pausing\"", reasons)
	}
	select {
	case <-stream.ctx.Done():
	default:
		t.Error("ended stream's context still live after Done")
	}
}

// TestStreamMarkedDuringDrainEndsAtOnce: a response that shows it is a
// stream only after the drain began is ended as soon as it says so.
func TestStreamMarkedDuringDrainEndsAtOnce(t *testing.T) {
	var tr Tracker
	h, _ := startHandler(t, &tr, "sbx")
	c := trackedOf(t, &tr, "sbx", h)
	drained := make(chan error, 1)
	go func() {
		_, err := tr.Drain(context.Background(), "sbx", Policy{Grace: 5 * time.Second, EndReason: "pausing"})
		drained <- err
	}()
	waitFor(t, func() bool { return tr.Draining("sbx") })
	ended := make(chan string, 1)
	c.Streaming(func(reason string) { ended <- reason; close(h.finish) })
	select {
	case r := <-ended:
		if r != "pausing" {
			t.Fatalf("reason %q", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("stream marked during a drain was not ended")
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// TestKillForceClosesStreams: a drain without an end reason (a kill) cuts
// streams like everything else instead of ending them politely.
func TestKillForceClosesStreams(t *testing.T) {
	var tr Tracker
	h, client := startHandler(t, &tr, "sbx")
	trackedOf(t, &tr, "sbx", h).Streaming(func(string) { t.Error("kill called the stream's end function") })
	forced, err := tr.Drain(context.Background(), "sbx", Policy{})
	if err != nil || forced != 1 {
		t.Fatalf("Drain = %d, %v; want 1 forced", forced, err)
	}
	<-h.finished
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read succeeded after a kill drain")
	}
}

// TestDrainPortLeavesOtherPorts: a fork drains envd's port only.
func TestDrainPortLeavesOtherPorts(t *testing.T) {
	var tr Tracker
	a, _ := connPair(t)
	b, _ := connPair(t)
	envdConn, err := tr.Track("sbx", 49983, context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	app, err := tr.Track("sbx", 8000, context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Done()
	var ended bool
	envdConn.Streaming(func(string) { ended = true; envdConn.Done() })
	app.Streaming(func(string) { t.Error("a drain of port 49983 ended a stream on port 8000") })
	forced, err := tr.Drain(context.Background(), "sbx", Policy{Grace: time.Second, EndReason: "forking", Port: 49983})
	if err != nil || forced != 0 || !ended {
		t.Fatalf("Drain = %d, %v, ended %v", forced, err, ended)
	}
	if tr.Count("sbx") != 1 || app.Context().Err() != nil {
		t.Fatal("the port 8000 connection did not survive a drain of port 49983")
	}
}

// trackedOf finds the Conn startHandler registered for h.
func trackedOf(t *testing.T, tr *Tracker, id string, h *handler) *Conn {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for c := range tr.sandboxes[id].conns {
		if c.ctx == h.ctx {
			return c
		}
	}
	t.Fatal("handler not tracked")
	return nil
}

// TestEndedStreamThatLingersIsClosedAfterEndGrace: a stream ended cleanly
// whose client never lets go (a WebSocket client that does not answer the
// close frame) is closed after EndGrace, not after the whole Grace.
func TestEndedStreamThatLingersIsClosedAfterEndGrace(t *testing.T) {
	var tr Tracker
	h, client := startHandler(t, &tr, "sbx")
	trackedOf(t, &tr, "sbx", h).Streaming(func(string) {}) // ends politely, but the handler stays
	start := time.Now()
	forced, err := tr.Drain(context.Background(), "sbx", Policy{Grace: 5 * time.Second, EndReason: "pausing", EndGrace: 200 * time.Millisecond})
	if err != nil || forced != 0 {
		t.Fatalf("Drain = %d, %v; want 0 forced", forced, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Drain took %v: it waited for the lingering stream past EndGrace", el)
	}
	<-h.finished
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the lingering stream's connection is still open")
	}
}
