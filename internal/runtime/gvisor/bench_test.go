package gvisor

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkCreate measures Create until envd answers, both ways, and the memory one idle
// sandbox is charged (the cgroup's usage a second after Create).
func BenchmarkCreate(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			d := testDriver(b, m.mode)
			if m.mode == CreateRestore {
				create(b, d, 1, 512) // takes the template snapshot outside the timing
			}
			var times []time.Duration
			var memBytes int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				sb := newSpec(b, d, 1, 512)
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				b.StartTimer()
				start := time.Now()
				err := d.Create(ctx, sb.spec)
				times = append(times, time.Since(start))
				b.StopTimer()
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				time.Sleep(time.Second)
				memBytes += readCgroupInt(b, "memory", sb.spec.ID, "memory.usage_in_bytes")
				destroyNow(b, d, sb)
				b.StartTimer()
			}
			b.ReportMetric(p50ms(times), "p50-ms/create")
			b.ReportMetric(float64(memBytes)/float64(b.N)/(1<<20), "MiB-idle/sandbox")
		})
	}
}

// BenchmarkPauseResume measures Pause (checkpoint + release) and Resume (restore until envd
// answers) of one sandbox, cycle after cycle.
func BenchmarkPauseResume(b *testing.B) {
	d := testDriver(b, CreateRestore)
	sb := create(b, d, 1, 512)
	var pause, resume []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		start := time.Now()
		if err := d.Pause(ctx, sb.spec); err != nil {
			b.Fatal(err)
		}
		pause = append(pause, time.Since(start))
		if err := sb.slot.ReAdd(); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if err := d.Resume(ctx, sb.spec); err != nil {
			b.Fatal(err)
		}
		resume = append(resume, time.Since(start))
		cancel()
	}
	b.ReportMetric(p50ms(pause), "p50-ms/pause")
	b.ReportMetric(p50ms(resume), "p50-ms/resume")
}

// destroyNow destroys a benchmark sandbox at once (Destroy is idempotent, so the cleanup
// registered by newSpec does nothing more), keeping at most one sandbox alive.
func destroyNow(b *testing.B, d *Driver, sb *sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Destroy(ctx, sb.spec); err != nil {
		b.Fatal(err)
	}
}

// p50ms is the median of ds in milliseconds.
func p50ms(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}
