package main

import (
	"context"
	"time"
)

// probe times GET /api directly on t every 20 ms until the returned stop is called, then
// records p50 and p99; it does nothing unless on.
func probe(ctx context.Context, t *target, on bool, s *Section, phase string) (stop func()) {
	if !on {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan samples, 1)
	go func() {
		hc := newHTTP1Client(1)
		var d samples
		for i := 0; i < 10000 && ctx.Err() == nil; i++ {
			start := time.Now()
			if err := getDiscard(ctx, hc, t, formDirect, "/api", nil); err == nil {
				d = append(d, time.Since(start))
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
		done <- d
	}()
	return func() {
		cancel()
		d := <-done
		s.add("probe: direct GET /api p50 "+phase, d.pct(50), "ms")
		s.add("probe: direct GET /api p99 "+phase, d.pct(99), "ms")
	}
}
