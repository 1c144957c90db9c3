package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const createDefinition = "time from calling Client.Create until the first Commands.Run(\"true\") in the new " +
	"sandbox has completed (what a user waits for before running code); sequential = one after " +
	"another; a batch of N starts N creates at once: wall = first start to last completion, " +
	"p50/p90 over each create's own time. Sandboxes are killed after each phase (not timed)."

// createReady creates a sandbox and runs `true` in it, returning the time both took.
func createReady(ctx context.Context, e *env) (time.Duration, *hearth.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	sb, err := e.create(ctx, 5*time.Minute)
	if err != nil {
		return 0, nil, fmt.Errorf("create: %w", err)
	}
	if _, err := sb.Commands.Run(ctx, "true", nil); err != nil {
		return 0, sb, fmt.Errorf("first command in %s: %w", sb.ID, err)
	}
	return time.Since(start), sb, nil
}

func runCreate(ctx context.Context, e *env, sequential int, batches []int, s *Section) error {
	var seq samples
	for range sequential {
		d, sb, err := createReady(ctx, e)
		if sb != nil {
			if kerr := e.kill(ctx, sb.ID); kerr != nil && err == nil {
				err = kerr
			}
		}
		if err != nil {
			return fmt.Errorf("sequential: %w", err)
		}
		seq = append(seq, d)
	}
	s.add(fmt.Sprintf("sequential p50 (n=%d)", sequential), seq.pct(50), "ms")
	s.add(fmt.Sprintf("sequential p90 (n=%d)", sequential), seq.pct(90), "ms")

	for _, n := range batches {
		var (
			mu   sync.Mutex
			each samples
			sbs  []*hearth.Sandbox
		)
		start := time.Now()
		err := forEach(ctx, make([]struct{}, n), n, func(ctx context.Context, _ int, _ struct{}) error {
			d, sb, err := createReady(ctx, e)
			mu.Lock()
			defer mu.Unlock()
			if sb != nil {
				sbs = append(sbs, sb)
			}
			if err == nil {
				each = append(each, d)
			}
			return err
		})
		wall := time.Since(start)
		kerr := forEach(ctx, sbs, 8, func(ctx context.Context, _ int, sb *hearth.Sandbox) error { return e.kill(ctx, sb.ID) })
		if err != nil {
			return fmt.Errorf("batch of %d: %w", n, err)
		}
		if kerr != nil {
			return fmt.Errorf("kill batch of %d: %w", n, kerr)
		}
		s.add(fmt.Sprintf("batch of %d: wall", n), ms(wall), "ms")
		s.add(fmt.Sprintf("batch of %d: p50 per create", n), each.pct(50), "ms")
		s.add(fmt.Sprintf("batch of %d: p90 per create", n), each.pct(90), "ms")
	}
	return nil
}
