package cp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
)

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// moveAgent is an agent with an artifacts store: a pause reports a manifest, and a resume
// with a manifest is recorded (or refused, as for a host without the template build).
type moveAgent struct {
	listAgent
	refuse  bool
	mmu     sync.Mutex
	resumes []string // "id manifest"
}

func manifestOf(id string) string { return "sha256:" + strings.Repeat("0", 64-len(id)) + id }

func (a *moveAgent) Pause(_ context.Context, req *connect.Request[pb.PauseRequest]) (*connect.Response[pb.PauseResponse], error) {
	a.lmu.Lock()
	if a.has != nil {
		a.has[req.Msg.GetSandboxId()] = pb.State_STATE_PAUSED
	}
	a.lmu.Unlock()
	return connect.NewResponse(&pb.PauseResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId(), SnapshotManifest: manifestOf(req.Msg.GetSandboxId())}}), nil
}

func (a *moveAgent) Resume(_ context.Context, req *connect.Request[pb.ResumeRequest]) (*connect.Response[pb.ResumeResponse], error) {
	a.mmu.Lock()
	defer a.mmu.Unlock()
	if a.refuse {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(`template "base" here is build b2, the sandbox was paused on build b1`))
	}
	a.resumes = append(a.resumes, req.Msg.GetSandboxId()+" "+req.Msg.GetSnapshotManifest())
	return connect.NewResponse(&pb.ResumeResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId(), State: pb.State_STATE_RUNNING}}), nil
}

func (a *moveAgent) resumed() []string {
	a.mmu.Lock()
	defer a.mmu.Unlock()
	return slices.Clone(a.resumes)
}

func (a *moveAgent) destroys() []string {
	a.lmu.Lock()
	defer a.lmu.Unlock()
	return slices.Clone(a.destroyed)
}

// TestPausedSandboxResumesElsewhere: a paused sandbox whose snapshot is in the artifacts
// store resumes on another host when its own is down or draining, the record then names the
// new host, and the old host drops its copy (at once when it is up, when it is back
// otherwise) without the new one being touched. Without a manifest, or when no other host
// takes it, it stays paused and the API says why.
func TestPausedSandboxResumesElsewhere(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	h1 := &moveAgent{listAgent: listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{}}}
	h2 := &moveAgent{listAgent: listAgent{snapshotAgent: snapshotAgent{snapshot: map[string]bool{}}, has: map[string]pb.State{}}}
	startAgentServer(t, st, "h1", h1)
	startAgentServer(t, st, "h2", h2)
	setHost := func(id string, f func(*store.Host)) {
		t.Helper()
		h, _ := st.Host(ctx, id)
		f(&h)
		if err := st.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"down1", "drained1", "noman", "refused", "auto"} {
		putSandbox(t, st, store.Sandbox{ID: id, HostID: "h1", State: store.StateRunning, CPUs: 1, MemoryMiB: 256, AutoResume: true})
		h1.has[id] = pb.State_STATE_RUNNING
	}
	for _, id := range []string{"down1", "refused", "auto"} {
		if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/"+id+"/pause", "{}", key); status != http.StatusNoContent {
			t.Fatalf("pause %s: %d %s", id, status, body)
		}
		if sb, _ := st.Sandbox(ctx, id); sb.SnapshotManifest != manifestOf(id) {
			t.Fatalf("%s paused: manifest %q, want the agent's", id, sb.SnapshotManifest)
		}
	}
	// Paused by an agent without an artifacts store: no manifest.
	if _, err := st.UpdateSandbox(ctx, "noman", func(x *store.Sandbox) error { x.State = store.StatePaused; return nil }); err != nil {
		t.Fatal(err)
	}
	h1.has["noman"] = pb.State_STATE_PAUSED

	// h1 goes silent.
	setHost("h1", func(h *store.Host) { h.LastHeartbeat = time.Now().UTC().Add(-2 * time.Minute) })
	s.checkHosts(ctx)

	h2.refuse = true
	status, body, _ := call(t, "POST", hs.URL+"/sandboxes/refused/connect", "{}", key)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "no other host could take it") || !strings.Contains(body, "build b2") {
		t.Fatalf("connect when the only other host refuses: %d %s", status, body)
	}
	if sb, _ := st.Sandbox(ctx, "refused"); sb.State != store.StatePaused || sb.HostID != "h1" || sb.SnapshotManifest == "" {
		t.Fatalf("refused move left %+v, want paused on h1 with its manifest", sb)
	}
	h2.refuse = false
	status, body, _ = call(t, "POST", hs.URL+"/sandboxes/noman/connect", "{}", key)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "on that host only") {
		t.Fatalf("connect to a paused sandbox without manifest on a down host: %d %s", status, body)
	}

	status, body, _ = call(t, "POST", hs.URL+"/sandboxes/down1/connect", "{}", key)
	if status != http.StatusCreated {
		t.Fatalf("connect to a paused sandbox of a down host: %d %s", status, body)
	}
	sb, _ := st.Sandbox(ctx, "down1")
	if sb.State != store.StateRunning || sb.HostID != "h2" || sb.SnapshotManifest != "" {
		t.Fatalf("after the move: %s on %s manifest %q, want running on h2 and no manifest", sb.State, sb.HostID, sb.SnapshotManifest)
	}
	if got := h2.resumed(); !slices.Equal(got, []string{"down1 " + manifestOf("down1")}) {
		t.Fatalf("resumes on h2: %v", got)
	}
	h2.lmu.Lock()
	h2.has["down1"] = pb.State_STATE_RUNNING
	h2.lmu.Unlock()
	// Traffic to an auto-resuming sandbox of the down host resumes it on the other one too.
	if _, err := s.resolveProxy(httptest.NewRequest("GET", "/", nil), proxy.Route{SandboxID: "auto", Port: 8080, Path: "/"}); err != nil {
		t.Fatalf("traffic to a paused sandbox of a down host: %v", err)
	}
	if sb, _ := st.Sandbox(ctx, "auto"); sb.State != store.StateRunning || sb.HostID != "h2" {
		t.Fatalf("auto-resumed sandbox: %s on %s, want running on h2", sb.State, sb.HostID)
	}
	h2.lmu.Lock()
	h2.has["auto"] = pb.State_STATE_RUNNING
	h2.lmu.Unlock()

	// h1 is back with its stale paused copy: reconcile drops it there, and nothing on h2.
	setHost("h1", func(h *store.Host) { h.State, h.LastHeartbeat = store.HostReady, time.Now().UTC() })
	h, _ := st.Host(ctx, "h1")
	s.reconcileHost(ctx, h)
	h2host, _ := st.Host(ctx, "h2")
	s.reconcileHost(ctx, h2host)
	if got := h1.destroys(); !sameSet(got, []string{"down1", "auto"}) {
		t.Fatalf("destroyed on the returning host: %v, want down1 and auto", got)
	}
	if got := h2.destroys(); len(got) != 0 {
		t.Fatalf("destroyed on the new host: %v", got)
	}
	if sb, _ := st.Sandbox(ctx, "down1"); sb.State != store.StateRunning || sb.HostID != "h2" {
		t.Fatalf("after reconcile: %s on %s", sb.State, sb.HostID)
	}

	// Draining: its sandboxes are paused with manifests and resume elsewhere on next use;
	// the drained host, up, is told at once to drop its copy.
	if status, body, _ := call(t, "POST", hs.URL+"/hearth/v1/hosts/h1/drain", "", key); status != http.StatusOK {
		t.Fatalf("drain: %d %s", status, body)
	}
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/drained1/connect", "{}", key); status != http.StatusCreated {
		t.Fatalf("connect to a sandbox of a drained host: %d %s", status, body)
	}
	if sb, _ := st.Sandbox(ctx, "drained1"); sb.HostID != "h2" || sb.State != store.StateRunning {
		t.Fatalf("drained sandbox: %s on %s, want running on h2", sb.State, sb.HostID)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(h1.destroys(), "drained1") {
		if time.Now().After(deadline) {
			t.Fatalf("the drained host was not told to drop its copy: destroys %v", h1.destroys())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A paused sandbox without manifest on a drained (but up) host still resumes there.
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/noman/connect", "{}", key); status != http.StatusCreated {
		t.Fatalf("connect to a sandbox without manifest on its drained host: %d %s", status, body)
	}
	if sb, _ := st.Sandbox(ctx, "noman"); sb.HostID != "h1" {
		t.Fatalf("sandbox without manifest moved to %s", sb.HostID)
	}
}

// TestTemplateArtifactReachesAgents: the artifact an agent reports for its template build is
// recorded and handed to the agent a create is placed on, so one that lacks the template can
// fetch it; an agent without a store, reporting the same build, does not clear it, and a new
// build without one does.
func TestTemplateArtifactReachesAgents(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	agent := startSnapshotAgent(t, st, "h1")
	art := manifestOf("tplbase")
	s.registerTemplate(ctx, hostreg.Template{Name: "base", Version: "b1-e1", EnvdVersion: "0.6.4", Artifact: art})
	s.registerTemplate(ctx, hostreg.Template{Name: "base", Version: "b1-e1", EnvdVersion: "0.6.4"})
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes", `{"templateID":"base"}`, map[string]string{"X-API-Key": testKey}); status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	agent.mu.Lock()
	got := agent.created[0].GetTemplateArtifact()
	agent.mu.Unlock()
	if got != art {
		t.Fatalf("create sent template_artifact %q, want %q", got, art)
	}
	s.registerTemplate(ctx, hostreg.Template{Name: "base", Version: "b2-e1", EnvdVersion: "0.6.4"})
	if tpl, _ := st.Template(ctx, "base"); tpl.Artifact != "" {
		t.Fatalf("a new build kept the old build's artifact %q", tpl.Artifact)
	}
}
