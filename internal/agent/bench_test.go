package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
)

// BenchmarkLifecycle measures what the control plane waits for, through the agent's API:
// create (slot, runsc, envd /init), pause (drain, guest sync, checkpoint) and resume (slot,
// restore, /init), each reported as p50 and p90 over b.N sandboxes.
//
//	go test -run '^$' -bench Lifecycle -benchtime 20x ./internal/agent/
func BenchmarkLifecycle(b *testing.B) {
	env := setupEnv(b)
	h := startAgent(b, env, b.TempDir())
	defer h.stop()
	ctx := context.Background()
	var create, pause, resume []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		if _, err := h.rpc.Create(ctx, connect.NewRequest(&pb.CreateRequest{SandboxId: id, Template: "base", Cpus: 1, MemoryMib: 512})); err != nil {
			b.Fatal(err)
		}
		create = append(create, time.Since(start))
		start = time.Now()
		if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: id})); err != nil {
			b.Fatal(err)
		}
		pause = append(pause, time.Since(start))
		start = time.Now()
		if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id})); err != nil {
			b.Fatal(err)
		}
		resume = append(resume, time.Since(start))
		b.StopTimer()
		if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id})); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"create", create}, {"pause", pause}, {"resume", resume}} {
		sort.Slice(m.d, func(i, j int) bool { return m.d[i] < m.d[j] })
		at := func(p float64) float64 { return float64(m.d[int(float64(len(m.d)-1)*p)].Microseconds()) / 1000 }
		b.ReportMetric(at(0.5), m.name+"-p50-ms")
		b.ReportMetric(at(0.9), m.name+"-p90-ms")
	}
}

// BenchmarkWarmPoolMemory measures what an idle warm pool costs the host: MemAvailable
// (/proc/meminfo, median of 3 reads 1 s apart) before the agent starts and once its pool of
// 20 base sandboxes is full and has settled for 5 s, per pooled sandbox; and the memory the
// pooled sandboxes' cgroups are charged, per pooled sandbox. The density section of bench/
// measures the same first figure for sandboxes created through the API.
//
//	go test -run '^$' -bench WarmPoolMemory -benchtime 1x ./internal/agent/
func BenchmarkWarmPoolMemory(b *testing.B) {
	const n = 20
	env := setupEnv(b)
	before := medianMemAvailable(b)
	h := startAgentOn(b, env, b.TempDir(), warmNet, func(c *sandbox.Config) {
		c.WarmPool = sandbox.WarmPool{Sizes: map[string]int{"base": n}, CPUs: 1, MemoryMiB: 512}
	})
	defer h.stop()
	deadline := time.Now().Add(5 * time.Minute)
	for h.mgr.WarmReady()["base"] < n {
		if time.Now().After(deadline) {
			b.Fatalf("pool of %d not full within 5 minutes: %v", n, h.mgr.WarmReady())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	after := medianMemAvailable(b)
	charged, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", warmCgroupParent, "memory.usage_in_bytes"))
	if err != nil {
		b.Fatal(err)
	}
	cg, err := strconv.ParseInt(strings.TrimSpace(string(charged)), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(before-after)/n/(1<<20), "host-MiB/pooled")
	b.ReportMetric(float64(cg)/n/(1<<20), "cgroup-MiB/pooled")
}

// medianMemAvailable is the median of three reads of MemAvailable a second apart, in bytes.
func medianMemAvailable(b *testing.B) int64 {
	var v []int64
	for i := range 3 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		data, err := os.ReadFile("/proc/meminfo")
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				v = append(v, kb<<10)
			}
		}
	}
	if len(v) != 3 {
		b.Fatal("no MemAvailable in /proc/meminfo")
	}
	slices.Sort(v)
	return v[1]
}
