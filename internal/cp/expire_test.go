package cp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
)

// expiryAgent counts pauses and destroys; a pause takes a while, so replicas that listed the
// same expired sandbox overlap.
type expiryAgent struct {
	snapshotAgent
	pauses, destroys atomic.Int64
}

func (a *expiryAgent) Pause(ctx context.Context, req *connect.Request[pb.PauseRequest]) (*connect.Response[pb.PauseResponse], error) {
	a.pauses.Add(1)
	time.Sleep(100 * time.Millisecond)
	return connect.NewResponse(&pb.PauseResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId()}}), nil
}

func (a *expiryAgent) Destroy(_ context.Context, req *connect.Request[pb.DestroyRequest]) (*connect.Response[pb.DestroyResponse], error) {
	a.destroys.Add(1)
	return connect.NewResponse(&pb.DestroyResponse{}), nil
}

// TestTimeoutsActOnceAcrossReplicas: two control plane replicas on one store expire the same
// sandboxes over and over, at once; each timeout acts exactly once, and a sandbox one replica
// paused on its timeout is never killed by the other.
func TestTimeoutsActOnceAcrossReplicas(t *testing.T) {
	s1, _, st := newTestCP(t)
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	agent := &expiryAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}}
	startAgentServer(t, st, "h1", agent)
	ctx := context.Background()
	past := time.Now().UTC().Add(-time.Second)
	for _, sb := range []store.Sandbox{
		{ID: "autopause", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h1", State: store.StateRunning, AutoPause: true, StartedAt: past, EndAt: past},
		{ID: "autokill", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h1", State: store.StateRunning, StartedAt: past, EndAt: past},
	} {
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for round := 0; round < 5; round++ {
		for _, s := range []*Server{s1, s2, s1, s2} {
			wg.Add(1)
			go func() { defer wg.Done(); s.expire(ctx) }()
		}
		wg.Wait()
	}
	if p, d := agent.pauses.Load(), agent.destroys.Load(); p != 1 || d != 1 {
		t.Fatalf("agent saw %d pauses and %d destroys, want 1 and 1", p, d)
	}
	if n := s1.counts.expired() + s2.counts.expired(); n != 2 {
		t.Fatalf("replicas acted on %d timeouts, want 2", n)
	}
	// What each replica's GET /metrics says adds up the same way.
	sum := map[string]int{}
	for _, s := range []*Server{s1, s2} {
		hs := httptest.NewServer(s.APIHandler())
		defer hs.Close()
		status, body, hdr := call(t, "GET", hs.URL+"/metrics", "", map[string]string{"X-API-Key": testKey})
		if status != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %d %s %q", status, hdr.Get("Content-Type"), body)
		}
		for _, action := range []string{"paused", "killed"} {
			var n int
			series := `hearth_sandbox_timeouts_total{action="` + action + `"} `
			i := strings.Index(body, "\n"+series)
			if i < 0 {
				t.Fatalf("no %s series in %q", action, body)
			}
			fmt.Sscan(body[i+1+len(series):], &n)
			sum[action] += n
		}
	}
	if sum["paused"] != 1 || sum["killed"] != 1 {
		t.Fatalf("timeouts summed over the replicas' /metrics: %v, want 1 paused and 1 killed", sum)
	}
	got, err := st.Sandbox(ctx, "autopause")
	if err != nil || got.State != store.StatePaused {
		t.Fatalf("auto-pause sandbox after its timeout: %+v, %v; want paused", got, err)
	}
	if _, err := st.Sandbox(ctx, "autokill"); err == nil {
		t.Fatal("the killed sandbox's record is still there")
	}
}

// TestStaleExpiryListingActsOnNothing: a replica whose list of expired sandboxes was read
// before another replica paused one of them (on its timeout) or extended another leaves both
// alone; before claimExpired it failed to pause the paused one and then killed it.
func TestStaleExpiryListingActsOnNothing(t *testing.T) {
	s1, _, st := newTestCP(t)
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	agent := &expiryAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}}
	startAgentServer(t, st, "h1", agent)
	ctx := context.Background()
	past := time.Now().UTC().Add(-time.Second)
	for _, sb := range []store.Sandbox{
		{ID: "paused-by-1", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h1", State: store.StateRunning, AutoPause: true, StartedAt: past, EndAt: past},
		{ID: "extended", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h1", State: store.StateRunning, StartedAt: past, EndAt: past},
	} {
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	stale, err := st.ExpiredSandboxes(ctx, time.Now().UTC())
	if err != nil || len(stale) != 2 {
		t.Fatalf("expired: %v %v", stale, err)
	}
	for _, sb := range stale {
		switch sb.ID {
		case "paused-by-1": // replica 1 acts on its timeout
			s1.expireOne(ctx, sb)
		case "extended": // a client extends it
			if _, err := st.UpdateSandbox(ctx, sb.ID, func(x *store.Sandbox) error { x.EndAt = time.Now().UTC().Add(time.Hour); return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, sb := range stale {
		s2.expireOne(ctx, sb)
	}
	if d := agent.destroys.Load(); d != 0 {
		t.Fatalf("%d destroys from a stale listing, want 0", d)
	}
	if got, err := st.Sandbox(ctx, "paused-by-1"); err != nil || got.State != store.StatePaused {
		t.Fatalf("paused-by-1: %+v %v, want paused", got, err)
	}
}

// TestMetricsAreTheOperators: another team's key is refused GET /metrics, and no key at all
// is asked for one.
func TestMetricsAreTheOperators(t *testing.T) {
	_, hs, _, other := tenants(t)
	for _, c := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"operator", map[string]string{"X-API-Key": testKey}, http.StatusOK},
		{"another team", map[string]string{"X-API-Key": other}, http.StatusForbidden},
		{"no key", nil, http.StatusUnauthorized},
	} {
		if status, body, _ := call(t, "GET", hs.URL+"/metrics", "", c.hdr); status != c.want {
			t.Errorf("%s: GET /metrics: %d %q, want %d", c.name, status, body, c.want)
		}
	}
}

// TestKillAndPauseFreeRoomAtOnce: on a host at its memory limit, a sandbox killed or paused
// makes room for the next create at once, not only after the agent's next heartbeat (a
// user at capacity who kills one sandbox and creates another got 503 "no host agent has
// room"). Killing a paused sandbox frees nothing more: its memory was freed by the pause.
func TestKillAndPauseFreeRoomAtOnce(t *testing.T) {
	s, _, st := newTestCP(t)
	agent := &expiryAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}}
	startAgentServer(t, st, "h1", agent)
	ctx := context.Background()
	h, _ := st.Host(ctx, "h1")
	h.MemoryTotalMiB, h.MemoryCommittedMiB, h.LastHeartbeat = 1024, 2048, time.Now().UTC() // full at 2x overcommit
	if err := st.PutHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	putRunning(t, st, "a", "h1") // 1024 MiB each
	putRunning(t, st, "b", "h1")
	d := demand{memMiB: 1024, cpus: 1}
	fits := func() bool { _, err := s.place(ctx, d); return err == nil }
	if fits() {
		t.Fatal("a sandbox fit on a full host")
	}
	if err := s.kill(ctx, "a", "killed by request"); err != nil {
		t.Fatal(err)
	}
	if !fits() {
		t.Fatal("no room right after a kill")
	}
	s.addPending("h1", d) // the create that took it
	if fits() {
		t.Fatal("room for two after one kill")
	}
	if err := s.pause(ctx, "b", false); err != nil {
		t.Fatal(err)
	}
	if !fits() {
		t.Fatal("no room right after a pause")
	}
	s.addPending("h1", d)
	if err := s.kill(ctx, "b", "killed by request"); err != nil {
		t.Fatal(err)
	}
	if fits() {
		t.Fatal("killing a paused sandbox made room a second time")
	}
	// The next heartbeat reports the host's own figures, and the releases end with it.
	time.Sleep(5 * time.Millisecond)
	h, _ = st.Host(ctx, "h1")
	h.MemoryCommittedMiB, h.LastHeartbeat = 2048, time.Now().UTC()
	st.PutHost(ctx, h)
	if fits() {
		t.Fatal("room after a heartbeat that reports the host full")
	}
}
