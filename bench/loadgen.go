package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// loadParams shape the Jupyter-like traffic the PTY is measured under: WebSocket clients
// exchanging small messages (kernel channels), REST polls (status checks) and bulk
// downloads, all through the public proxy's header form, as the SDKs address it. The load is
// open loop: every operation starts on a fixed schedule whether or not earlier ones have
// finished, so the offered load stays what the flags say however slow the path gets (a
// closed loop would instead speed up until the host is saturated).
type loadParams struct {
	WS      int     `json:"ws"`       // WebSocket connections
	WSRate  float64 `json:"ws_rate"`  // messages per second, over all connections
	WSBytes int     `json:"ws_bytes"` // bytes per message
	// PollRate is GET /api requests per second.
	PollRate float64 `json:"poll_rate"`
	// DownloadMBps is the download rate in MB/s, as GET /blob of ChunkBytes each at
	// DownloadMBps·10^6/ChunkBytes requests per second.
	DownloadMBps float64 `json:"download_mbps"`
	ChunkBytes   int64   `json:"chunk_bytes"`
	// MaxInFlight bounds the polls and the downloads in flight, each: an operation due while
	// that many are still running is skipped and counted, so a stalled path cannot pile up
	// requests without bound.
	MaxInFlight int `json:"max_in_flight"`
	// Form is how the load reaches the sandbox: the proxy's header form, or direct for the
	// investigations that take the proxy out of the path.
	Form form `json:"form"`
	// Max bounds the whole run, whatever the caller does.
	Max time.Duration `json:"max"`
}

// loadStats is what the load generator achieved, so a report says how heavy "loaded" was.
type loadStats struct {
	Seconds   float64 `json:"seconds"`
	WSSent    int64   `json:"ws_sent"`
	WSMsgs    int64   `json:"ws_msgs"` // echoes received
	APIReqs   int64   `json:"api_reqs"`
	BlobBytes int64   `json:"blob_bytes"`
	// Skipped counts operations that were due but not started: the in-flight bound was
	// reached, or a sender fell more than a second behind its schedule.
	Skipped  int64  `json:"skipped"`
	Errors   int64  `json:"errors"`
	FirstErr string `json:"first_error,omitempty"`
}

// counters are shared by the workers.
type counters struct {
	wsSent, ws, api, blob, skipped, errs atomic.Int64
	once                                 sync.Once
	first                                string
}

func (c *counters) fail(err error) {
	c.errs.Add(1)
	c.once.Do(func() { c.first = err.Error() })
}

// runLoad drives the load until ctx ends or p.Max passes. ready is called once every
// WebSocket is connected (or has failed to). The figures count from then on.
func runLoad(ctx context.Context, t *target, p loadParams, ready func()) loadStats {
	ctx, cancel := context.WithTimeout(ctx, p.Max)
	defer cancel()
	hc := newHTTP1Client(p.WS + 2*p.MaxInFlight + 4)
	var c counters
	var wg sync.WaitGroup
	var dialed sync.WaitGroup
	go1 := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	start := make(chan struct{})
	for range p.WS {
		dialed.Add(1)
		go1(func() { wsWorker(ctx, t, hc, p, &c, dialed.Done, start) })
	}
	if p.PollRate > 0 {
		go1(func() {
			<-start
			spawnPaced(ctx, p.PollRate, p.MaxInFlight, &c, func() error {
				err := getDiscard(ctx, hc, t, p.Form, "/api", nil)
				if err == nil {
					c.api.Add(1)
				}
				return err
			})
		})
	}
	if p.DownloadMBps > 0 && p.ChunkBytes > 0 {
		path := fmt.Sprintf("/blob?bytes=%d", p.ChunkBytes)
		go1(func() {
			<-start
			spawnPaced(ctx, p.DownloadMBps*1e6/float64(p.ChunkBytes), p.MaxInFlight, &c, func() error {
				return getDiscard(ctx, hc, t, p.Form, path, &c.blob)
			})
		})
	}
	dialed.Wait()
	ready()
	began := time.Now()
	close(start)
	wg.Wait()
	return loadStats{
		Seconds: time.Since(began).Seconds(), WSSent: c.wsSent.Load(), WSMsgs: c.ws.Load(), APIReqs: c.api.Load(),
		BlobBytes: c.blob.Load(), Skipped: c.skipped.Load(), Errors: c.errs.Load(), FirstErr: c.first,
	}
}

// pace calls fn rate times a second on a fixed schedule until ctx ends. A call that runs
// late does not move the schedule; one more than a second behind it gives up the missed
// slots (counted as skipped) rather than bursting to catch up.
func pace(ctx context.Context, rate float64, c *counters, fn func()) {
	if rate <= 0 {
		return
	}
	every := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for {
		next = next.Add(every)
		if behind := time.Since(next); behind > time.Second {
			missed := int64(behind / every)
			c.skipped.Add(missed)
			next = next.Add(time.Duration(missed) * every)
		}
		sleepCtx(ctx, time.Until(next))
		if ctx.Err() != nil {
			return
		}
		fn()
	}
}

// spawnPaced starts op rate times a second, each in its own goroutine, at most maxInFlight
// at once; an op due while that many run is skipped and counted.
func spawnPaced(ctx context.Context, rate float64, maxInFlight int, c *counters, op func() error) {
	sem := make(chan struct{}, max(maxInFlight, 1))
	var wg sync.WaitGroup
	defer wg.Wait()
	pace(ctx, rate, c, func() {
		select {
		case sem <- struct{}{}:
		default:
			c.skipped.Add(1)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := op(); err != nil && ctx.Err() == nil {
				c.fail(err)
			}
		}()
	})
}

// wsWorker keeps one WebSocket open, sending messages at its share of p.WSRate whether or
// not the echoes have come back, and counting the echoes as they arrive; it reconnects
// after errors.
func wsWorker(ctx context.Context, t *target, hc *http.Client, p loadParams, c *counters, dialed func(), start <-chan struct{}) {
	var once sync.Once
	defer once.Do(dialed)
	msg := []byte(strings.Repeat("x", p.WSBytes))
	wsURL := "ws" + strings.TrimPrefix(t.url(p.Form, "/ws"), "http")
	for ctx.Err() == nil {
		h := http.Header{}
		t.header(p.Form, h)
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h})
		cancel()
		once.Do(dialed)
		if err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("websocket dial: %w", err))
				sleepCtx(ctx, 200*time.Millisecond)
			}
			continue
		}
		select {
		case <-start:
		case <-ctx.Done():
		}
		cctx, stop := context.WithCancel(ctx)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			defer stop()
			for {
				if _, _, err := conn.Read(cctx); err != nil {
					if cctx.Err() == nil {
						c.fail(fmt.Errorf("websocket read: %w", err))
					}
					return
				}
				c.ws.Add(1)
			}
		}()
		pace(cctx, p.WSRate/float64(p.WS), c, func() {
			if err := conn.Write(cctx, websocket.MessageText, msg); err != nil {
				if cctx.Err() == nil {
					c.fail(fmt.Errorf("websocket write: %w", err))
				}
				stop()
				return
			}
			c.wsSent.Add(1)
		})
		stop()
		conn.CloseNow()
		<-readDone
	}
}

// getDiscard GETs path in form f, reads the body to the end and counts its bytes into n.
func getDiscard(ctx context.Context, hc *http.Client, t *target, f form, path string, n *atomic.Int64) error {
	req, err := t.request(ctx, f, path)
	if err != nil {
		return err
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var w io.Writer = io.Discard
	if n != nil {
		w = countWriter{n}
	}
	if _, err := io.CopyBuffer(w, res.Body, make([]byte, 256<<10)); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", res.Status)
	}
	return nil
}

type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
