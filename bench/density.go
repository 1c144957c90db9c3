package main

import (
	"context"
	"fmt"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const densityDefinition = "host memory per idle sandbox: (MemAvailable before − MemAvailable after) / N, " +
	"from /proc/meminfo (median of 3 reads 1 s apart each), after creating N sandboxes of the " +
	"base template (its 512 MiB limit is a cap, not a reservation) 4 at a time, each running one " +
	"`true`, and letting them settle. Other processes on the host move this figure too."

func runDensity(ctx context.Context, e *env, n int, settle time.Duration, s *Section) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	before, err := memAvailable(ctx)
	if err != nil {
		return err
	}
	var sbs []*hearth.Sandbox
	start := time.Now()
	created := make([]*hearth.Sandbox, n)
	err = forEach(ctx, make([]struct{}, n), 4, func(ctx context.Context, i int, _ struct{}) error {
		_, sb, err := createReady(ctx, e)
		created[i] = sb
		return err
	})
	wall := time.Since(start)
	for _, sb := range created {
		if sb != nil {
			sbs = append(sbs, sb)
		}
	}
	defer forEach(context.WithoutCancel(ctx), sbs, 8, func(ctx context.Context, _ int, sb *hearth.Sandbox) error { return e.kill(ctx, sb.ID) })
	if err != nil {
		return fmt.Errorf("create %d: %w", n, err)
	}
	sleepCtx(ctx, settle)
	after, err := memAvailable(ctx)
	if err != nil {
		return err
	}
	s.add(fmt.Sprintf("created %d (4 at a time)", n), wall.Seconds(), "s")
	s.add("MemAvailable before", float64(before)/(1<<20), "MiB")
	s.add(fmt.Sprintf("MemAvailable with %d", n), float64(after)/(1<<20), "MiB")
	s.add("host memory per idle sandbox", float64(before-after)/float64(n)/(1<<20), "MiB")
	return nil
}

// memAvailable is the median of three reads of MemAvailable a second apart.
func memAvailable(ctx context.Context) (int64, error) {
	var v []float64
	for i := range 3 {
		if i > 0 {
			sleepCtx(ctx, time.Second)
		}
		m, err := meminfo("MemAvailable")
		if err != nil {
			return 0, err
		}
		v = append(v, float64(m))
	}
	return int64(median(v)), nil
}
