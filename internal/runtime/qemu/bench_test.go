package qemu

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkColdBoot measures Create until envd answers (QEMU start, kernel, init, envd).
func BenchmarkColdBoot(b *testing.B) {
	d := testDriver(b, Config{})
	var times []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sb := newSpec(b, d, 1, testMemMiB)
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
		destroyNow(b, d, sb)
		b.StartTimer()
	}
	b.ReportMetric(p50ms(times), "p50-ms/boot")
}

// BenchmarkPauseResume measures, cycle after cycle on one VM: Pause (balloon, stop, save,
// quit), Resume until a command has run through envd, and the snapshot's size on disk.
func BenchmarkPauseResume(b *testing.B) {
	d := testDriver(b, Config{})
	sb := create(b, d, 1, testMemMiB)
	var pauses, resumes []time.Duration
	var memBytes, stateBytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		guestDropCaches(b, sb)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		b.StartTimer()
		start := time.Now()
		if err := d.Pause(ctx, sb.spec); err != nil {
			b.Fatal(err)
		}
		pauses = append(pauses, time.Since(start))
		b.StopTimer()
		memBytes += allocated(b, filepath.Join(sb.spec.Dir, snapshotDir, memFile))
		stateBytes += allocated(b, filepath.Join(sb.spec.Dir, snapshotDir, stateFile))
		b.StartTimer()
		start = time.Now()
		if err := d.Resume(ctx, sb.spec); err != nil {
			b.Fatal(err)
		}
		envdRun(b, sb, "true")
		resumes = append(resumes, time.Since(start))
		cancel()
	}
	b.ReportMetric(p50ms(pauses), "p50-ms/pause")
	b.ReportMetric(p50ms(resumes), "p50-ms/resume-to-exec")
	b.ReportMetric(float64(memBytes)/float64(b.N)/(1<<20), "MiB-mem/snapshot")
	b.ReportMetric(float64(stateBytes)/float64(b.N)/(1<<10), "KiB-state/snapshot")
}

// destroyNow destroys a benchmark sandbox at once, keeping at most one VM alive.
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
