package cp

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// listAgent answers List with the sandboxes it holds and counts destroys.
type listAgent struct {
	snapshotAgent
	lmu       sync.Mutex
	has       map[string]pb.State
	destroyed []string
}

func (a *listAgent) List(context.Context, *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	a.lmu.Lock()
	defer a.lmu.Unlock()
	res := &pb.ListResponse{}
	for id, st := range a.has {
		res.Sandboxes = append(res.Sandboxes, &pb.Sandbox{SandboxId: id, State: st})
	}
	return connect.NewResponse(res), nil
}

func (a *listAgent) Destroy(_ context.Context, req *connect.Request[pb.DestroyRequest]) (*connect.Response[pb.DestroyResponse], error) {
	a.lmu.Lock()
	defer a.lmu.Unlock()
	a.destroyed = append(a.destroyed, req.Msg.GetSandboxId())
	delete(a.has, req.Msg.GetSandboxId())
	return connect.NewResponse(&pb.DestroyResponse{}), nil
}

func putSandbox(t *testing.T, st store.Store, sb store.Sandbox) {
	t.Helper()
	now := time.Now().UTC()
	sb.TeamID, sb.TemplateID, sb.StartedAt, sb.AllowPublicTraffic = store.DefaultTeam, "base", now, true
	if sb.EndAt.IsZero() {
		sb.EndAt = now.Add(time.Hour)
	}
	if err := st.CreateSandbox(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
}

func stateOf(t *testing.T, st store.Store, id string) string {
	t.Helper()
	sb, err := st.Sandbox(context.Background(), id)
	if errors.Is(err, store.ErrNotFound) {
		return "gone"
	}
	if err != nil {
		t.Fatal(err)
	}
	return sb.State
}

// TestHostLossLosesNothing: a host that stops sending heartbeats is down and its running
// sandboxes are lost (shown as such, not reachable, not resumable), but no record is
// deleted: its paused sandboxes stay paused. When it comes back, what it still runs is
// running again, what it lost is forgotten, and what was killed or timed out while it was
// away is destroyed on it, so no sandbox runs twice. Before, a missed heartbeat deleted every
// sandbox of the host and its return destroyed them all, paused ones included.
func TestHostLossLosesNothing(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	agent := &listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{
		"alive": pb.State_STATE_RUNNING, "pausedthere": pb.State_STATE_PAUSED, "killedaway": pb.State_STATE_RUNNING,
		"expiredaway": pb.State_STATE_RUNNING, "waitpause": pb.State_STATE_RUNNING,
	}}
	startAgentServer(t, st, "h1", agent)
	past := time.Now().UTC().Add(-time.Minute)
	putSandbox(t, st, store.Sandbox{ID: "alive", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "vanished", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "pausedthere", HostID: "h1", State: store.StatePaused})
	putSandbox(t, st, store.Sandbox{ID: "killedaway", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "expiredaway", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "waitpause", HostID: "h1", State: store.StateRunning, AutoPause: true})

	h, _ := st.Host(ctx, "h1")
	h.LastHeartbeat = time.Now().UTC().Add(-2 * time.Minute)
	if err := st.PutHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	s.checkHosts(ctx)
	if h, _ := st.Host(ctx, "h1"); h.State != store.HostDown {
		t.Fatalf("host state %q, want down", h.State)
	}
	for id, want := range map[string]string{"alive": "lost", "vanished": "lost", "pausedthere": "paused", "killedaway": "lost"} {
		if got := stateOf(t, st, id); got != want {
			t.Fatalf("%s after its host went silent: %s, want %s", id, got, want)
		}
	}

	// The API shows lost sandboxes as lost and refuses what needs their host.
	tests := []struct {
		name, method, path string
		status             int
		msg                string
	}{
		{"info", "GET", "/sandboxes/alive", 200, `"state":"lost"`},
		{"listed as lost", "GET", "/v2/sandboxes?state=lost", 200, `"sandboxID":"alive"`},
		{"connect", "POST", "/sandboxes/alive/connect", 503, "sandbox alive is lost: its host h1 stopped responding"},
		{"pause", "POST", "/sandboxes/alive/pause", 503, "is lost"},
		{"resume paused on the down host", "POST", "/sandboxes/pausedthere/resume", 503, "not available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := call(t, tt.method, hs.URL+tt.path, "{}", key)
			if status != tt.status || !strings.Contains(body, tt.msg) {
				t.Fatalf("%s %s = %d %s, want %d containing %q", tt.method, tt.path, status, body, tt.status, tt.msg)
			}
		})
	}
	if _, body, _ := call(t, "GET", hs.URL+"/v2/sandboxes?state=running", "", key); strings.Contains(body, `"alive"`) {
		t.Fatalf("a lost sandbox is listed as running: %s", body)
	}
	// Traffic gets E2B's 502 for a sandbox that is not there, so isRunning() is false.
	_, err := s.resolveProxy(httptest.NewRequest("GET", "/", nil), proxy.Route{SandboxID: "alive", Port: 8080, Path: "/"})
	var nf *proxy.NotFoundError
	if !errors.As(err, &nf) || !strings.Contains(nf.Detail, "lost") {
		t.Fatalf("proxy to a lost sandbox: %v, want a not-found error saying lost", err)
	}

	// Killed while its host is away: forgotten now, destroyed when the host is back.
	if status, body, _ := call(t, "DELETE", hs.URL+"/sandboxes/killedaway", "", key); status != http.StatusNoContent {
		t.Fatalf("kill a lost sandbox: %d %s", status, body)
	}
	// Timeouts: a lost sandbox that would be killed is forgotten; one that would be paused
	// waits for its host.
	for _, id := range []string{"expiredaway", "waitpause"} {
		if _, err := st.UpdateSandbox(ctx, id, func(x *store.Sandbox) error { x.EndAt = past; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	s.checkHosts(ctx) // a second replica's check changes nothing
	s.expire(ctx)
	for id, want := range map[string]string{"killedaway": "gone", "expiredaway": "gone", "waitpause": "lost"} {
		if got := stateOf(t, st, id); got != want {
			t.Fatalf("%s while its host is away: %s, want %s", id, got, want)
		}
	}

	// The host comes back.
	h, _ = st.Host(ctx, "h1")
	h.State, h.LastHeartbeat = store.HostReady, time.Now().UTC()
	if err := st.PutHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	s.reconcileHost(ctx, h)
	for id, want := range map[string]string{"alive": "running", "pausedthere": "paused", "vanished": "gone", "waitpause": "running"} {
		if got := stateOf(t, st, id); got != want {
			t.Fatalf("%s after its host came back: %s, want %s", id, got, want)
		}
	}
	agent.lmu.Lock()
	destroyed := strings.Join(agent.destroyed, ",")
	agent.lmu.Unlock()
	if destroyed != "expiredaway,killedaway" && destroyed != "killedaway,expiredaway" {
		t.Fatalf("destroyed on the returning host: %q, want killedaway and expiredaway only", destroyed)
	}
	// The sandbox whose timeout passed while it was lost is paused on the next check.
	s.expire(ctx)
	if got := stateOf(t, st, "waitpause"); got != store.StatePaused {
		t.Fatalf("waitpause after its host came back and its timeout passed: %s, want paused", got)
	}
}

// TestDrainHost: a drained host takes no new sandboxes, its running ones are paused (and stay
// resumable), heartbeats do not undo the drain, and only the operator's team may drain.
func TestDrainHost(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	agent := &listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}}
	startAgentServer(t, st, "h1", agent)
	putSandbox(t, st, store.Sandbox{ID: "a", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "b", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "c", HostID: "h1", State: store.StatePaused})
	if h, err := s.place(ctx, demand{memMiB: 256, cpus: 1}); err != nil || h.ID != "h1" {
		t.Fatalf("place before drain: %v %v", h.ID, err)
	}

	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	other := NewAPIKey()
	if err := RegisterKey(ctx, st, other, "other's", "t-other"); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := call(t, "POST", hs.URL+"/hearth/v1/hosts/h1/drain", "", map[string]string{"X-API-Key": other}); status != http.StatusForbidden {
		t.Fatalf("drain by another team: %d, want 403", status)
	}
	if status, body, _ := call(t, "POST", hs.URL+"/hearth/v1/hosts/nope/drain", "", key); status != http.StatusNotFound || !strings.Contains(body, "host nope not found") {
		t.Fatalf("drain unknown host: %d %s", status, body)
	}
	status, body, _ := call(t, "POST", hs.URL+"/hearth/v1/hosts/h1/drain", "", key)
	var res api.DrainResult
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusOK || err != nil {
		t.Fatalf("drain: %d %s", status, body)
	}
	sort.Strings(res.Paused)
	if !reflect.DeepEqual(res, api.DrainResult{HostID: "h1", Paused: []string{"a", "b"}, Failed: []api.DrainFailure{}}) {
		t.Fatalf("drain: %s, want a and b paused", body)
	}
	for _, id := range []string{"a", "b", "c"} {
		if got := stateOf(t, st, id); got != store.StatePaused {
			t.Fatalf("%s after drain: %s, want paused", id, got)
		}
	}
	if _, err := s.place(ctx, demand{memMiB: 256, cpus: 1}); !errors.Is(err, errNoCapacity) {
		t.Fatalf("placed on a draining host: %v", err)
	}
	// The agent's next heartbeat keeps the drain.
	h, _ := st.Host(ctx, "h1")
	h.Draining = false
	h.LastHeartbeat = time.Now().UTC()
	if err := st.PutHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := call(t, "GET", hs.URL+"/hearth/v1/hosts", "", key); !strings.Contains(body, `"draining":true`) {
		t.Fatalf("hosts after a heartbeat of a draining host: %s", body)
	}
	// Paused there, resumable there: snapshots do not move between hosts yet.
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/a/resume", "{}", key); status != http.StatusCreated {
		t.Fatalf("resume a drained sandbox: %d %s", status, body)
	}
	if status, _, _ := call(t, "POST", hs.URL+"/hearth/v1/hosts/h1/undrain", "", key); status != http.StatusNoContent {
		t.Fatalf("undrain: %d", status)
	}
	if h, err := s.place(ctx, demand{memMiB: 256, cpus: 1}); err != nil || h.ID != "h1" {
		t.Fatalf("place after undrain: %v %v", h.ID, err)
	}
}

// TestPlacementWeighsCPUsAndLimits: placement takes the host that would be least loaded by
// memory or vCPUs, whichever is higher, skips hosts at their agent's --max-sandboxes
// (counting creates in flight), and says why a template's own host cannot take a sandbox.
func TestPlacementWeighsCPUsAndLimits(t *testing.T) {
	s, _, st := newTestCP(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, h := range []store.Host{
		// Little memory committed, but its CPUs are taken.
		{ID: "cpu-busy", CPUs: 4, MemoryTotalMiB: 16384, MemoryCommittedMiB: 1024, CPUsCommitted: 16},
		// More memory committed, CPUs free.
		{ID: "mem-busy", CPUs: 4, MemoryTotalMiB: 16384, MemoryCommittedMiB: 8192, CPUsCommitted: 2},
		// The emptiest, but one sandbox from its limit.
		{ID: "capped", CPUs: 4, MemoryTotalMiB: 16384, SandboxesRunning: 2, MaxSandboxes: 3},
	} {
		h.State, h.LastHeartbeat, h.RPCAddr, h.ProxyAddr = store.HostReady, now, "127.0.0.1:1", "127.0.0.1:2"
		if err := st.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	d := demand{memMiB: 512, cpus: 2}
	steps := []string{"capped", "mem-busy", "mem-busy"}
	for i, want := range steps {
		h, err := s.place(ctx, d)
		if err != nil || h.ID != want {
			t.Fatalf("placement %d: %v, %v; want %s", i, h.ID, err, want)
		}
		s.addPending(h.ID, d)
	}
	if _, err := s.placeTemplate(ctx, d, "capped"); err == nil || !strings.Contains(err.Error(), "at its limit of 3 running sandboxes") {
		t.Fatalf("place on the full template host: %v", err)
	}
}

// TestHostMarkedDownOnceAcrossReplicas: two replicas that check a silent host at once mark
// it down once between them, and a host whose heartbeat is fresh stays ready. Before, each
// wrote back the host record it had listed, so a heartbeat that landed in between was
// overwritten (the host went down with its sandboxes lost though it had just reported in).
func TestHostMarkedDownOnceAcrossReplicas(t *testing.T) {
	s1, _, st := newTestCP(t)
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	ctx := context.Background()
	for _, id := range []string{"silent", "fresh"} {
		startAgentServer(t, st, id, &listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{}})
	}
	putSandbox(t, st, store.Sandbox{ID: "on-silent", HostID: "silent", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "on-fresh", HostID: "fresh", State: store.StateRunning})
	h, _ := st.Host(ctx, "silent")
	h.LastHeartbeat = time.Now().UTC().Add(-2 * time.Minute)
	if err := st.PutHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range []*Server{s1, s2, s1, s2} {
		wg.Add(1)
		go func() { defer wg.Done(); s.checkHosts(ctx) }()
	}
	wg.Wait()
	if n := s1.counts.hostsDown.Load() + s2.counts.hostsDown.Load(); n != 1 {
		t.Fatalf("the silent host was marked down %d times, want once", n)
	}
	for id, want := range map[string]string{"silent": store.HostDown, "fresh": store.HostReady} {
		if h, _ := st.Host(ctx, id); h.State != want {
			t.Fatalf("host %s: %s, want %s", id, h.State, want)
		}
	}
	for id, want := range map[string]string{"on-silent": store.StateLost, "on-fresh": store.StateRunning} {
		if got := stateOf(t, st, id); got != want {
			t.Fatalf("%s: %s, want %s", id, got, want)
		}
	}
}

// createsDuringList is an agent on which another replica finishes a create while it answers
// List: the sandbox is recorded as running here, and the list, begun before, lacks it.
type createsDuringList struct {
	*listAgent
	st store.Store
	t  *testing.T
}

func (a createsDuringList) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	res, err := a.listAgent.List(ctx, req)
	putSandbox(a.t, a.st, store.Sandbox{ID: "just-created", HostID: "h1", State: store.StateRunning})
	return res, err
}

// TestReconcileKeepsCreatesFinishedMeanwhile: a reconcile (a replica starting, a host coming
// back) that overlaps a create finished by another replica keeps that sandbox; it dropped the
// record as gone from the agent when it read the agent before the store.
func TestReconcileKeepsCreatesFinishedMeanwhile(t *testing.T) {
	s, _, st := newTestCP(t)
	ctx := context.Background()
	agent := &listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{"old": pb.State_STATE_RUNNING}}
	startAgentServer(t, st, "h1", createsDuringList{listAgent: agent, st: st, t: t})
	putSandbox(t, st, store.Sandbox{ID: "old", HostID: "h1", State: store.StateRunning})
	putSandbox(t, st, store.Sandbox{ID: "gone", HostID: "h1", State: store.StateRunning})
	s.Reconcile(ctx)
	for id, want := range map[string]string{"old": store.StateRunning, "just-created": store.StateRunning, "gone": "gone"} {
		if got := stateOf(t, st, id); got != want {
			t.Errorf("%s after the reconcile: %s, want %s", id, got, want)
		}
	}
	if len(agent.destroyed) != 0 {
		t.Errorf("the reconcile destroyed %v on the agent", agent.destroyed)
	}
}

// TestHeartbeatOfAReadyHostBringsLostSandboxesBack: a replica can mark a host down and lose
// its sandboxes just as another records a heartbeat from it, so the host is ready with lost
// sandboxes; its next heartbeat reconciles them (before, only a host that was down was
// reconciled, and they stayed lost).
func TestHeartbeatOfAReadyHostBringsLostSandboxesBack(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	agent := &listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{"back": pb.State_STATE_RUNNING}}
	startAgentServer(t, st, "h1", agent)
	putSandbox(t, st, store.Sandbox{ID: "back", HostID: "h1", State: store.StateLost})
	h, _ := st.Host(ctx, "h1")
	b, _ := json.Marshal(hostreg.Heartbeat{RPCAddr: h.RPCAddr, ProxyAddr: h.ProxyAddr, Runtime: "gvisor", CPUs: 2, MemoryTotalMiB: 4096})
	if status, body, _ := call(t, "POST", hs.URL+hostreg.Path("h1"), string(b), map[string]string{"Authorization": "Bearer " + testAgentToken}); status != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", status, body)
	}
	for deadline := time.Now().Add(5 * time.Second); stateOf(t, st, "back") != store.StateRunning; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the lost sandbox of a ready host is %s after its heartbeat, want running", stateOf(t, st, "back"))
		}
	}
}
