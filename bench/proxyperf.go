package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const proxyDefinition = "the load server in a sandbox reached directly from the host at the sandbox's own " +
	"address (from the agent API's envd_address) versus through the public proxy in each routing " +
	"form (headers E2b-Sandbox-Id/Port; path /proxy/ID/PORT/…; host PORT-ID.localhost sent to " +
	"127.0.0.1). download = one GET of a 100 MB /blob, median MB/s of 5 rounds with the forms in " +
	"rotating order and 1 s between downloads; the sandbox's egress shaper (200 MB/s, 100 MB " +
	"burst) refills in that pause, so this is the path's own speed, not the sustained limit; " +
	"ratio = form / direct. req/s = small " +
	"/api GETs by 8 keep-alive clients for 3 s, median of 3 rounds with the forms in rotating order. added latency = p50 of 200 sequential /api GETs " +
	"through the form minus the direct p50, the forms interleaved request by request."

// proxyConfig bounds the proxy section.
type proxyConfig struct {
	BlobBytes   int64
	Rounds      int
	RPSClients  int
	RPSDuration time.Duration
	RPSRounds   int
	LatencyN    int
	// ProfileURL, when set, is hearth dev's --pprof-listen base URL: a CPU profile of hearth
	// over the request-rate rounds is written to ProfileOut (an investigation).
	ProfileURL, ProfileOut string
}

// profileCPU starts a CPU profile of span at a Go pprof endpoint and returns the function
// that waits for it to be written (a profile cut short is not written at all); it does
// nothing without a URL.
func profileCPU(ctx context.Context, base, out string, span time.Duration, s *Section) (stop func()) {
	if base == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		u := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimRight(base, "/"), int(span.Seconds()))
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.note("cpu profile", "failed: "+err.Error())
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			s.note("cpu profile", "failed: "+err.Error())
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err == nil {
			s.note("cpu profile of hearth over the req/s rounds", out)
		}
	}()
	return func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		cancel()
	}
}

func runProxy(ctx context.Context, t *target, pc proxyConfig, s *Section) error {
	forms := append([]form{formDirect}, proxyForms...)

	// Downloads.
	tput := map[form][]float64{}
	hc := newHTTP1Client(4)
	for r := range pc.Rounds {
		for i := range forms {
			f := forms[(i+r)%len(forms)]
			sleepCtx(ctx, time.Second)
			dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			var n atomic.Int64
			start := time.Now()
			err := getDiscard(dctx, hc, t, f, fmt.Sprintf("/blob?bytes=%d", pc.BlobBytes), &n)
			el := time.Since(start)
			cancel()
			if err != nil {
				return fmt.Errorf("download via %s: %w", f, err)
			}
			if n.Load() != pc.BlobBytes {
				return fmt.Errorf("download via %s: got %d bytes, want %d", f, n.Load(), pc.BlobBytes)
			}
			tput[f] = append(tput[f], mbps(n.Load(), el))
		}
	}
	direct := median(tput[formDirect])
	s.add("download direct", direct, "MB/s")
	for _, f := range proxyForms {
		s.add(fmt.Sprintf("download %s (ratio)", f), ratio(median(tput[f]), direct), fmt.Sprintf("× (%.0f MB/s)", median(tput[f])))
	}

	// Requests per second: rounds with the forms in rotating order, as for downloads, so
	// other work on the host falls on all alike; the median of each form's rounds.
	rpsRounds := map[form][]float64{}
	rpsSpan := time.Duration(pc.RPSRounds*len(forms)) * (pc.RPSDuration + 500*time.Millisecond)
	stopProfile := profileCPU(ctx, pc.ProfileURL, pc.ProfileOut, rpsSpan, s)
	for r := range pc.RPSRounds {
		for i := range forms {
			f := forms[(i+r)%len(forms)]
			sleepCtx(ctx, 500*time.Millisecond)
			n, err := requestRate(ctx, t, f, pc.RPSClients, pc.RPSDuration)
			if err != nil {
				stopProfile()
				return fmt.Errorf("req/s via %s: %w", f, err)
			}
			rpsRounds[f] = append(rpsRounds[f], n)
		}
	}
	stopProfile()
	rps := map[form]float64{}
	for f, v := range rpsRounds {
		rps[f] = median(v)
	}
	s.add(fmt.Sprintf("req/s direct (%d clients)", pc.RPSClients), rps[formDirect], "req/s")
	for _, f := range proxyForms {
		s.add(fmt.Sprintf("req/s %s (ratio)", f), ratio(rps[f], rps[formDirect]), fmt.Sprintf("× (%.0f req/s)", rps[f]))
	}

	// Added latency.
	lat := map[form]samples{}
	clients := map[form]*http.Client{}
	for _, f := range forms {
		clients[f] = newHTTP1Client(1)
	}
	for i := range pc.LatencyN + 5 {
		for _, f := range forms {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			err := getDiscard(rctx, clients[f], t, f, "/api", nil)
			el := time.Since(start)
			cancel()
			if err != nil {
				return fmt.Errorf("latency via %s: %w", f, err)
			}
			if i >= 5 {
				lat[f] = append(lat[f], el)
			}
		}
	}
	s.add("latency direct p50", lat[formDirect].pct(50), "ms")
	for _, f := range proxyForms {
		s.add(fmt.Sprintf("added latency %s p50", f), lat[f].pct(50)-lat[formDirect].pct(50), fmt.Sprintf("ms (p50 %.2f ms)", lat[f].pct(50)))
	}
	return nil
}

// requestRate runs clients keep-alive workers GETting /api in form f for d.
func requestRate(ctx context.Context, t *target, f form, clients int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	hc := newHTTP1Client(clients)
	var (
		n     atomic.Int64
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := getDiscard(ctx, hc, t, f, "/api", nil); err != nil {
					if ctx.Err() == nil {
						first.CompareAndSwap(nil, &err)
						return
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return 0, *e
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
