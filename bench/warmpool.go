package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/auth"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	procpb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
)

// The warm pool's shape as scripts/bench.sh gives it to hearth dev (--warm-pool base=1
// --warm-pool-cpus 1 --warm-pool-memory-mib 512). The control plane's creates (2 CPUs) never
// claim from it, so every other figure is of fresh boots; only warmPoolCreates claims.
const (
	warmPoolCPUs      = 1
	warmPoolMemoryMiB = 512
	// warmPoolRefillGap is the untimed wait before each create, longer than one boot, so the
	// pool has refilled after the previous claim.
	warmPoolRefillGap = time.Second
)

const warmPoolDefinition = "warm pool: the same create → first command, through the agent's API and " +
	"proxy (what the control plane calls; the public API's share is left out of both): Create, then " +
	"Process.Start(\"true\") until its end. Pooled: the pool's shape (1 CPU, 512 MiB), claimed from " +
	"hearth dev's --warm-pool base=1; fresh: 1 CPU, 513 MiB, which the pool cannot serve, so it boots. " +
	"The two alternate, each after an untimed 1 s for the pool to refill; sandboxes are killed untimed."

// runWarmPool measures n pooled and n fresh creates side by side.
func runWarmPool(ctx context.Context, e *env, n int, s *Section) error {
	if e.cfg.AgentProxy == "" {
		s.Metrics = append(s.Metrics, &Metric{Name: "warm pool", Text: "skipped: no -agent-proxy"})
		return nil
	}
	var pooled, fresh samples
	for i := range n {
		for _, v := range []struct {
			mem int
			out *samples
		}{{warmPoolMemoryMiB, &pooled}, {warmPoolMemoryMiB + 1, &fresh}} {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(warmPoolRefillGap):
			}
			d, err := agentCreateReady(ctx, e, fmt.Sprintf("bench-warm-%d-%d", i, v.mem), v.mem)
			if err != nil {
				return err
			}
			*v.out = append(*v.out, d)
		}
	}
	s.add(fmt.Sprintf("warm pool: pooled create → first command p50 (n=%d)", n), pooled.pct(50), "ms")
	s.add(fmt.Sprintf("warm pool: pooled create → first command p90 (n=%d)", n), pooled.pct(90), "ms")
	s.add(fmt.Sprintf("warm pool: fresh create → first command p50 (n=%d)", n), fresh.pct(50), "ms")
	s.add(fmt.Sprintf("warm pool: fresh create → first command p90 (n=%d)", n), fresh.pct(90), "ms")
	return nil
}

// agentCreateReady creates sandbox id of memMiB through the agent's API, runs `true` in it
// through the agent's proxy, destroys it (untimed) and returns the time to the command's end.
func agentCreateReady(ctx context.Context, e *env, id string, memMiB int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	token := randomHex()
	start := time.Now()
	_, err := e.agent.Create(ctx, connect.NewRequest(&pb.CreateRequest{
		SandboxId: id, Template: "base", Cpus: warmPoolCPUs, MemoryMib: uint32(memMiB), EnvdAccessToken: token,
		EnvVars: map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": id},
	}))
	if err != nil {
		return 0, fmt.Errorf("agent create %s: %w", id, err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer dcancel()
		e.agent.Destroy(dctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id}))
	}()
	hc := &http.Client{Transport: agentProxyTransport{id: id, token: token, agentToken: e.cfg.AgentToken}}
	pc := processconnect.NewProcessClient(hc, "http://"+e.cfg.AgentProxy)
	stream, err := pc.Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "true"}}))
	if err != nil {
		return 0, fmt.Errorf("first command in %s: %w", id, err)
	}
	defer stream.Close()
	for stream.Receive() {
		if end := stream.Msg().GetEvent().GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				return 0, fmt.Errorf("first command in %s: exit %d", id, end.GetExitCode())
			}
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("first command in %s: %w", id, errors.Join(stream.Err(), errors.New("no end event")))
}

// agentProxyTransport sends what the control plane's proxy adds towards the agent's: the
// sandbox and port, the agent token, and the sandbox's envd token and user.
type agentProxyTransport struct{ id, token, agentToken string }

func (t agentProxyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(proxy.HeaderSandboxID, t.id)
	r.Header.Set(proxy.HeaderSandboxPort, "49983")
	r.Header.Set(hostreg.ProxyAuthHeader, t.agentToken)
	r.Header.Set(auth.Header, t.token)
	r.Header.Set("Authorization", "Basic dXNlcjo=") // user:
	return http.DefaultTransport.RoundTrip(r)
}

func randomHex() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
