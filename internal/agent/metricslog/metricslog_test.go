package metricslog

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
)

// TestRingBoundsAndRange: a ring keeps the last Keep samples, oldest first, and a range
// picks those whose host time is inside it, both ends included.
func TestRingBoundsAndRange(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := &ring{keep: 4}
	for i := range 6 {
		r.add(Sample{At: t0.Add(time.Duration(i) * 5 * time.Second), CPUCount: uint32(i)})
	}
	tests := []struct {
		name       string
		start, end time.Time
		want       []uint32 // CPUCount of the samples, in order
	}{
		{"everything kept", time.Time{}, time.Time{}, []uint32{2, 3, 4, 5}},
		{"inclusive bounds", t0.Add(15 * time.Second), t0.Add(20 * time.Second), []uint32{3, 4}},
		{"only start", t0.Add(21 * time.Second), time.Time{}, []uint32{5}},
		{"only end", time.Time{}, t0.Add(10 * time.Second), []uint32{2}},
		{"before the first kept", t0, t0.Add(9 * time.Second), nil},
		{"after the last", t0.Add(time.Hour), time.Time{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint32
			for _, s := range r.between(tt.start, tt.end) {
				got = append(got, s.CPUCount)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	if len(r.buf) != 4 {
		t.Fatalf("ring holds %d samples, bound 4", len(r.buf))
	}
}

func target(t *testing.T, id string, h http.HandlerFunc) Target {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return Target{ID: id, Running: true, Addr: netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))}
}

func envdAnswer(cpus int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ts":1,"cpu_count":%d,"cpu_used_pct":12.5,"mem_total":2048,"mem_used":1024}`, cpus)
	}
}

// TestHostileEnvdDoesNotBlockOthers: sandboxes whose envd stalls, sends an endless answer or
// garbage get no sample, and the well-behaved ones get theirs at once all the same; the
// sample carries the host's clock, not the guest's "ts".
func TestHostileEnvdDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var stalled atomic.Int32
	stall := func(w http.ResponseWriter, r *http.Request) {
		stalled.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
	huge := func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"cpu_count":1,"x":"`))
		chunk := []byte(strings.Repeat("x", 32<<10))
		for range 64 { // 2 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.Write([]byte(`"}`))
	}
	garbage := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("not json")) }
	refuses := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusUnauthorized) }
	good := target(t, "good", envdAnswer(2))
	tokened := target(t, "tokened", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(auth.Header) != "tok" {
			refuses(w, r)
			return
		}
		envdAnswer(4)(w, r)
	})
	tokened.Token = "tok"
	targets := []Target{
		target(t, "stall", stall), good, target(t, "huge", huge), target(t, "garbage", garbage),
		target(t, "refuses", refuses), tokened,
	}
	host := time.Unix(5000, 0)
	l := New(Config{Targets: func() []Target { return targets }, Timeout: 3 * time.Second, Now: func() time.Time { return host }})

	began := time.Now()
	l.Round(context.Background())
	deadline := time.Now().Add(2 * time.Second)
	for len(l.Samples("good", time.Time{}, time.Time{})) == 0 || len(l.Samples("tokened", time.Time{}, time.Time{})) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the well-behaved sandboxes got no sample while another envd stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("well-behaved samples took %v", took)
	}
	// The stalled read is still in flight: another round does not start a second one.
	l.Round(context.Background())
	l.Wait() // the stalled read ends at its timeout
	if n := stalled.Load(); n != 1 {
		t.Fatalf("the stalled envd got %d reads over two rounds, want 1", n)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("reads ended after %v, timeout 3s", took)
	}
	for _, c := range []struct {
		id   string
		want int
	}{{"stall", 0}, {"huge", 0}, {"garbage", 0}, {"refuses", 0}, {"good", 1}, {"tokened", 1}} {
		got := l.Samples(c.id, time.Time{}, time.Time{})
		if len(got) < c.want || (c.want == 0 && len(got) != 0) {
			t.Errorf("%s: %d samples, want %d", c.id, len(got), c.want)
		}
		for _, s := range got {
			if !s.At.Equal(host) {
				t.Errorf("%s: sample at %v, want the host's clock %v", c.id, s.At, host)
			}
		}
	}
	if s := l.Samples("tokened", time.Time{}, time.Time{})[0]; s.CPUCount != 4 || s.CPUUsedPct != 12.5 || s.MemUsed != 1024 || s.MemTotal != 2048 {
		t.Errorf("sample %+v does not carry envd's figures", s)
	}
}

// TestPausedKeepsKilledDrops: a sandbox that is not running keeps its samples and is not
// read; one gone from the agent loses them on the next round.
func TestPausedKeepsKilledDrops(t *testing.T) {
	var mu sync.Mutex
	reads := 0
	tg := target(t, "sb", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reads++
		mu.Unlock()
		envdAnswer(1)(w, r)
	})
	targets := []Target{tg}
	l := New(Config{Targets: func() []Target { return targets }})
	round := func() { l.Round(context.Background()); l.Wait() }
	round()
	round()
	if n := len(l.Samples("sb", time.Time{}, time.Time{})); n != 2 {
		t.Fatalf("running: %d samples, want 2", n)
	}
	targets[0].Running = false // paused
	round()
	mu.Lock()
	n := reads
	mu.Unlock()
	if got := len(l.Samples("sb", time.Time{}, time.Time{})); got != 2 || n != 2 {
		t.Fatalf("paused: %d samples after %d reads, want 2 and 2", got, n)
	}
	targets[0].Running = true // resumed
	round()
	if n := len(l.Samples("sb", time.Time{}, time.Time{})); n != 3 {
		t.Fatalf("resumed: %d samples, want 3", n)
	}
	targets = nil // killed
	round()
	if n := len(l.Samples("sb", time.Time{}, time.Time{})); n != 0 {
		t.Fatalf("killed: %d samples kept", n)
	}
}

// TestRunSamplesOnInterval: Run reads at once and then every Interval, until ctx ends.
func TestRunSamplesOnInterval(t *testing.T) {
	tg := target(t, "sb", envdAnswer(1))
	l := New(Config{Targets: func() []Target { return []Target{tg} }, Interval: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	l.Run(ctx)
	got := l.Samples("sb", time.Time{}, time.Time{})
	if len(got) < 3 {
		t.Fatalf("%d samples in 400 ms at a 50 ms interval", len(got))
	}
	for i := 1; i < len(got); i++ {
		if !got[i].At.After(got[i-1].At) {
			t.Fatalf("samples not in time order: %v then %v", got[i-1].At, got[i].At)
		}
	}
}
