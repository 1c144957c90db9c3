package agent

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"connectrpc.com/connect"

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
