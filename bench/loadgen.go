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
// exchanging small messages back to back (kernel channels), REST pollers (status checks)
// and bulk downloads, all through the public proxy's header form, as the SDKs address it.
type loadParams struct {
	WS        int           `json:"ws"`
	WSBytes   int           `json:"ws_bytes"`
	Pollers   int           `json:"pollers"`
	PollEvery time.Duration `json:"poll_every"`
	Blobs     int           `json:"blobs"`
	BlobBytes int64         `json:"blob_bytes"`
	// Form is how the load reaches the sandbox: the proxy's header form, or direct for the
	// investigations that take the proxy out of the path.
	Form form `json:"form"`
	// Max bounds the whole run, whatever the caller does.
	Max time.Duration `json:"max"`
}

// loadStats is what the load generator achieved, so a report says how heavy "loaded" was.
type loadStats struct {
	Seconds   float64 `json:"seconds"`
	WSMsgs    int64   `json:"ws_msgs"`
	APIReqs   int64   `json:"api_reqs"`
	BlobBytes int64   `json:"blob_bytes"`
	Errors    int64   `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
}

// counters are shared by the workers.
type counters struct {
	ws, api, blob, errs atomic.Int64
	once                sync.Once
	first               string
}

func (c *counters) fail(err error) {
	c.errs.Add(1)
	c.once.Do(func() { c.first = err.Error() })
}

// runLoad drives the load until ctx ends or p.Max passes. ready is called once every
// WebSocket is connected (or has failed to).
func runLoad(ctx context.Context, t *target, p loadParams, ready func()) loadStats {
	ctx, cancel := context.WithTimeout(ctx, p.Max)
	defer cancel()
	hc := newHTTP1Client(p.WS + p.Pollers + p.Blobs + 4)
	var c counters
	var wg sync.WaitGroup
	var dialed sync.WaitGroup
	start := time.Now()
	for range p.WS {
		wg.Add(1)
		dialed.Add(1)
		go func() {
			defer wg.Done()
			wsWorker(ctx, t, hc, p, &c, dialed.Done)
		}()
	}
	for range p.Pollers {
		wg.Add(1)
		go func() { defer wg.Done(); pollWorker(ctx, t, hc, p, &c) }()
	}
	for range p.Blobs {
		wg.Add(1)
		go func() { defer wg.Done(); blobWorker(ctx, t, hc, p, &c) }()
	}
	dialed.Wait()
	ready()
	wg.Wait()
	return loadStats{
		Seconds: time.Since(start).Seconds(), WSMsgs: c.ws.Load(), APIReqs: c.api.Load(),
		BlobBytes: c.blob.Load(), Errors: c.errs.Load(), FirstErr: c.first,
	}
}

// wsWorker sends a message and waits for its echo, back to back, reconnecting after errors.
func wsWorker(ctx context.Context, t *target, hc *http.Client, p loadParams, c *counters, dialed func()) {
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
		for ctx.Err() == nil {
			if err = conn.Write(ctx, websocket.MessageText, msg); err == nil {
				_, _, err = conn.Read(ctx)
			}
			if err != nil {
				if ctx.Err() == nil {
					c.fail(fmt.Errorf("websocket echo: %w", err))
				}
				break
			}
			c.ws.Add(1)
		}
		conn.CloseNow()
	}
}

// pollWorker GETs /api every p.PollEvery (back to back for zero).
func pollWorker(ctx context.Context, t *target, hc *http.Client, p loadParams, c *counters) {
	for ctx.Err() == nil {
		if err := getDiscard(ctx, hc, t, p.Form, "/api", nil); err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("poll /api: %w", err))
				sleepCtx(ctx, 100*time.Millisecond)
			}
			continue
		}
		c.api.Add(1)
		sleepCtx(ctx, p.PollEvery)
	}
}

// blobWorker downloads p.BlobBytes at a time, back to back.
func blobWorker(ctx context.Context, t *target, hc *http.Client, p loadParams, c *counters) {
	path := fmt.Sprintf("/blob?bytes=%d", p.BlobBytes)
	for ctx.Err() == nil {
		if err := getDiscard(ctx, hc, t, p.Form, path, &c.blob); err != nil && ctx.Err() == nil {
			c.fail(fmt.Errorf("download /blob: %w", err))
			sleepCtx(ctx, 100*time.Millisecond)
		}
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
