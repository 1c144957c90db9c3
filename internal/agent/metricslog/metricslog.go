// Package metricslog keeps a short history of each sandbox's envd GET /metrics on the agent:
// it reads every running sandbox's envd on a fixed interval and holds the samples in a
// bounded ring per sandbox, in memory only (an agent restart loses them), so that GET
// /sandboxes/{id}/metrics can answer a time range as E2B's does.
package metricslog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/hoststats"
)

// Defaults: a sample every 5 s, kept for 2 hours. A Sample is 80 bytes, so a full ring is
// 1440 × 80 B ≈ 113 KiB per sandbox.
const (
	DefaultInterval = 5 * time.Second
	DefaultKeep     = 1440
	// MaxAnswer caps the bytes read of one envd answer (a few hundred in practice): envd runs
	// inside the sandbox, which may answer anything.
	MaxAnswer = 64 << 10
)

// Sample is one reading of a sandbox's envd, stamped with the host's clock when it arrived:
// the guest's clock is the sandbox's to set and must not move samples in time.
type Sample struct {
	At         time.Time
	CPUCount   uint32
	CPUUsedPct float64
	MemTotal   uint64
	MemUsed    uint64
	MemCache   uint64
	DiskUsed   uint64
	DiskTotal  uint64
}

// Target is a sandbox on the agent, as the log sees it on each round.
type Target struct {
	ID string
	// Running sandboxes are read; the others (paused, transitional) keep their samples
	// without new ones. A sandbox missing from a round's targets has its samples dropped.
	Running bool
	// Addr is envd's TCP address; Socket, when set, is a host Unix socket to the same envd,
	// used instead.
	Addr   netip.AddrPort
	Socket string
	// Token is the sandbox's envd access token, empty when it has none.
	Token string
}

// Config wires a Log.
type Config struct {
	// Targets lists the agent's sandboxes; it is called once per round.
	Targets func() []Target
	// Interval between rounds (DefaultInterval when 0), Timeout of one read (Interval minus
	// a second when 0), Keep the samples per sandbox (DefaultKeep when 0).
	Interval time.Duration
	Timeout  time.Duration
	Keep     int
	Log      *slog.Logger
	// Now is the host clock; time.Now when nil.
	Now func() time.Time
}

// Log is the sampler and its rings. It is safe for concurrent use.
type Log struct {
	cfg Config

	mu    sync.Mutex
	rings map[string]*ring
	// reading marks the sandboxes whose read is still in flight: a slow envd skips rounds
	// rather than piling up reads, and never delays the others'.
	reading map[string]bool
	wg      sync.WaitGroup
}

// New returns a Log; call Run to start sampling.
func New(cfg Config) *Log {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = max(cfg.Interval-time.Second, cfg.Interval/2)
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{cfg: cfg, rings: map[string]*ring{}, reading: map[string]bool{}}
}

// Run samples every Interval until ctx ends, then waits for the reads in flight.
func (l *Log) Run(ctx context.Context) {
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		l.Round(ctx)
		select {
		case <-ctx.Done():
			l.wg.Wait()
			return
		case <-t.C:
		}
	}
}

// Round drops the samples of sandboxes that are gone and starts one read of each running
// sandbox that has none in flight. It does not wait for the reads.
func (l *Log) Round(ctx context.Context) {
	targets := l.cfg.Targets()
	present := make(map[string]bool, len(targets))
	var start []Target
	l.mu.Lock()
	for _, t := range targets {
		present[t.ID] = true
		if t.Running && !l.reading[t.ID] {
			l.reading[t.ID] = true
			start = append(start, t)
		}
	}
	for id := range l.rings {
		if !present[id] {
			delete(l.rings, id)
		}
	}
	l.mu.Unlock()
	for _, t := range start {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.read(ctx, t)
		}()
	}
}

// Wait waits for the reads in flight.
func (l *Log) Wait() { l.wg.Wait() }

func (l *Log) read(ctx context.Context, t Target) {
	m, err := fetch(ctx, t, l.cfg.Timeout)
	at := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.reading, t.ID)
	if err != nil {
		// Expected now and then (a sandbox pausing mid-read, a busy guest): a gap in the
		// chart, not an error of the agent.
		l.cfg.Log.Debug("metrics sample", "sandbox", t.ID, "err", err)
		return
	}
	r := l.rings[t.ID]
	if r == nil {
		r = &ring{keep: l.cfg.Keep}
		l.rings[t.ID] = r
	}
	r.add(Sample{
		At: at, CPUCount: uint32(max(m.CPUCount, 0)), CPUUsedPct: m.CPUUsedPct, MemTotal: m.MemTotal,
		MemUsed: m.MemUsed, MemCache: m.MemCache, DiskUsed: m.DiskUsed, DiskTotal: m.DiskTotal,
	})
}

// Samples returns a sandbox's samples whose time is in [start, end] (both inclusive; a zero
// bound is no bound), oldest first; none for a sandbox the log has no samples of.
func (l *Log) Samples(id string, start, end time.Time) []Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rings[id]
	if r == nil {
		return nil
	}
	return r.between(start, end)
}

// Forget drops a sandbox's samples at once (a kill), rather than on the next round.
func (l *Log) Forget(id string) {
	l.mu.Lock()
	delete(l.rings, id)
	l.mu.Unlock()
}

// fetch reads envd's GET /metrics of one sandbox, within timeout and MaxAnswer bytes.
func fetch(ctx context.Context, t Target, timeout time.Duration) (hoststats.Metrics, error) {
	var m hoststats.Metrics
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &net.Dialer{}
	// One connection per read: a sample every few seconds does not need a pool, and nothing
	// is left open to a sandbox between reads.
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if t.Socket != "" {
			return d.DialContext(ctx, "unix", t.Socket)
		}
		return d.DialContext(ctx, "tcp", t.Addr.String())
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://envd/metrics", nil)
	if err != nil {
		return m, err
	}
	if t.Token != "" {
		req.Header.Set(auth.Header, t.Token)
	}
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return m, fmt.Errorf("read envd metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return m, fmt.Errorf("read envd metrics: envd answered %s", res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxAnswer+1))
	if err != nil {
		return m, fmt.Errorf("read envd metrics: %w", err)
	}
	if len(body) > MaxAnswer {
		return m, fmt.Errorf("read envd metrics: the answer is over %d bytes", MaxAnswer)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("read envd metrics: %w", err)
	}
	return m, nil
}

// ring holds the last keep samples of one sandbox, in the order they arrived.
type ring struct {
	keep int
	buf  []Sample // grows to keep, then is overwritten from next on
	next int
}

func (r *ring) add(s Sample) {
	if len(r.buf) < r.keep {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % r.keep
}

func (r *ring) between(start, end time.Time) []Sample {
	var out []Sample
	for i := range r.buf {
		s := r.buf[(r.next+i)%len(r.buf)]
		if (!start.IsZero() && s.At.Before(start)) || (!end.IsZero() && s.At.After(end)) {
			continue
		}
		out = append(out, s)
	}
	return out
}
