package cp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// snapshotAgent answers the RPCs snapshots use, as an agent does, and records them.
type snapshotAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	mu       sync.Mutex
	snapped  []*pb.CreateSnapshotRequest
	deleted  []string
	created  []*pb.CreateRequest
	paused   []*pb.PauseRequest
	resumed  []string
	snapshot map[string]bool // snapshots it keeps
}

func (a *snapshotAgent) CreateSnapshot(_ context.Context, req *connect.Request[pb.CreateSnapshotRequest]) (*connect.Response[pb.CreateSnapshotResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.snapped = append(a.snapped, req.Msg)
	a.snapshot[req.Msg.GetSnapshotId()] = true
	return connect.NewResponse(&pb.CreateSnapshotResponse{Snapshot: &pb.Snapshot{
		SnapshotId: req.Msg.GetSnapshotId(), SourceSandboxId: req.Msg.GetSandboxId(), DiskMib: 2048, SizeBytes: 42 << 20,
	}}), nil
}

func (a *snapshotAgent) DeleteSnapshot(_ context.Context, req *connect.Request[pb.DeleteSnapshotRequest]) (*connect.Response[pb.DeleteSnapshotResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deleted = append(a.deleted, req.Msg.GetSnapshotId())
	delete(a.snapshot, req.Msg.GetSnapshotId())
	return connect.NewResponse(&pb.DeleteSnapshotResponse{}), nil
}

func (a *snapshotAgent) Create(_ context.Context, req *connect.Request[pb.CreateRequest]) (*connect.Response[pb.CreateResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.created = append(a.created, req.Msg)
	return connect.NewResponse(&pb.CreateResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId(), EnvdVersion: "0.6.4", DiskMib: 2048}}), nil
}

func (a *snapshotAgent) Pause(_ context.Context, req *connect.Request[pb.PauseRequest]) (*connect.Response[pb.PauseResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.paused = append(a.paused, req.Msg)
	return connect.NewResponse(&pb.PauseResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId()}}), nil
}

func (a *snapshotAgent) Resume(_ context.Context, req *connect.Request[pb.ResumeRequest]) (*connect.Response[pb.ResumeResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resumed = append(a.resumed, req.Msg.GetSandboxId())
	return connect.NewResponse(&pb.ResumeResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId()}}), nil
}

// startSnapshotAgent serves a snapshotAgent over h2c and registers it as ready host id.
func startSnapshotAgent(t *testing.T, st store.Store, id string) *snapshotAgent {
	t.Helper()
	agent := &snapshotAgent{snapshot: map[string]bool{}}
	startAgentServer(t, st, id, agent)
	return agent
}

// startAgentServer serves an agent's RPCs over h2c and registers it as ready host id.
func startAgentServer(t *testing.T, st store.Store, id string, agent hostagentv1connect.HostAgentServiceHandler) {
	t.Helper()
	rpc := httptest.NewUnstartedServer(http.NewServeMux())
	path, h := hostagentv1connect.NewHostAgentServiceHandler(agent)
	rpc.Config.Handler.(*http.ServeMux).Handle(path, h)
	rpc.Config.Protocols = new(http.Protocols)
	rpc.Config.Protocols.SetUnencryptedHTTP2(true)
	rpc.Start()
	t.Cleanup(rpc.Close)
	err := st.PutHost(context.Background(), store.Host{ID: id, State: store.HostReady, RPCAddr: strings.TrimPrefix(rpc.URL, "http://"),
		ProxyAddr: "127.0.0.1:1", MemoryTotalMiB: 8192, LastHeartbeat: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
}

func putRunning(t *testing.T, st store.Store, id, host string) {
	t.Helper()
	now := time.Now().UTC()
	err := st.CreateSandbox(context.Background(), store.Sandbox{ID: id, TeamID: store.DefaultTeam, TemplateID: "base", HostID: host, State: store.StateRunning,
		CPUs: 2, MemoryMiB: 1024, DiskMiB: 2048, StartedAt: now, EndAt: now.Add(time.Hour), EnvdVersion: "0.6.4"})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotLifecycle: the REST side of E2B's snapshots. A snapshot of a running sandbox is
// taken on its host and recorded; it is listed (paged, filtered) in E2B's shape, outlives
// its sandbox, starts new sandboxes on the host that keeps it, hands its name over to a
// newer snapshot (whose files replace its own), and is deleted through DELETE /templates.
func TestSnapshotLifecycle(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	h1 := startSnapshotAgent(t, st, "h1")
	putRunning(t, st, "src", "h1")

	status, body, _ := call(t, "POST", hs.URL+"/sandboxes/src/snapshots", `{}`, key)
	var unnamed api.SnapshotInfo
	if status != 201 || json.Unmarshal([]byte(body), &unnamed) != nil || !strings.HasSuffix(unnamed.SnapshotID, ":default") || len(unnamed.Names) != 0 {
		t.Fatalf("unnamed snapshot: %d %s", status, body)
	}
	status, body, _ = call(t, "POST", hs.URL+"/sandboxes/src/snapshots", `{"name":"golden"}`, key)
	if status != 201 || body != `{"snapshotID":"golden:default","names":["golden:default"]}`+"\n" {
		t.Fatalf("named snapshot: %d %s", status, body)
	}
	if len(h1.snapped) != 2 || h1.snapped[0].GetSandboxId() != "src" {
		t.Fatalf("agent snapshots: %+v", h1.snapped)
	}
	goldenFirst := h1.snapped[1].GetSnapshotId()
	if rec, err := st.Snapshot(ctx, store.DefaultTeam, "golden"); err != nil || rec.ID != goldenFirst || rec.HostID != "h1" || rec.SizeBytes != 42<<20 || rec.DiskMiB != 2048 {
		t.Fatalf("golden record: %+v, %v", rec, err)
	}

	// The snapshot outlives its sandbox.
	if err := st.DeleteSandbox(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"golden:default", "golden", "team/golden:default"} {
		status, body, _ = call(t, "POST", hs.URL+"/v2/sandboxes", `{"templateID":"`+ref+`","timeout":60}`, key)
		if status != 201 || !strings.Contains(body, `"templateID":"base"`) {
			t.Fatalf("create from %s: %d %s", ref, status, body)
		}
	}
	for _, c := range h1.created {
		if c.GetSnapshotId() != goldenFirst || c.GetTemplate() != "base" || c.GetCpus() != 2 || c.GetMemoryMib() != 1024 || c.GetDiskMib() != 2048 {
			t.Fatalf("agent create from snapshot: %+v", c)
		}
	}

	// Listing: newest first, paged with X-Next-Token, filtered by sandbox and name.
	putRunning(t, st, "other", "h1")
	call(t, "POST", hs.URL+"/sandboxes/other/snapshots", `{"name":"third"}`, key)
	var all []string
	next := ""
	for pages := 0; ; pages++ {
		url := hs.URL + "/snapshots?limit=2"
		if next != "" {
			url += "&nextToken=" + next
		}
		status, body, hdr := call(t, "GET", url, "", key)
		var page []api.SnapshotInfo
		if status != 200 || json.Unmarshal([]byte(body), &page) != nil || len(page) > 2 || pages > 3 {
			t.Fatalf("list page %d: %d %s", pages, status, body)
		}
		for _, p := range page {
			all = append(all, p.SnapshotID)
		}
		if next = hdr.Get("X-Next-Token"); next == "" {
			break
		}
	}
	if want := []string{"third:default", "golden:default", unnamed.SnapshotID}; strings.Join(all, ",") != strings.Join(want, ",") {
		t.Fatalf("listed %v, want %v", all, want)
	}
	for _, tc := range []struct{ query, want string }{
		{"sandboxID=other", `[{"snapshotID":"third:default","names":["third:default"]}]`},
		{"name=golden:default", `[{"snapshotID":"golden:default","names":["golden:default"]}]`},
		{"name=" + strings.TrimSuffix(unnamed.SnapshotID, ":default"), `[{"snapshotID":"` + unnamed.SnapshotID + `","names":[]}]`},
		{"name=golden:v2", `[]`},
		{"sandboxID=nosuch", `[]`},
	} {
		if status, body, _ := call(t, "GET", hs.URL+"/snapshots?"+tc.query, "", key); status != 200 || body != tc.want+"\n" {
			t.Fatalf("GET /snapshots?%s = %d %s, want %s", tc.query, status, body, tc.want)
		}
	}

	// A name taken again moves to the new snapshot; the old one's files go from its host.
	putRunning(t, st, "src2", "h1")
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/src2/snapshots", `{"name":"golden"}`, key); status != 201 {
		t.Fatalf("retake name: %d %s", status, body)
	}
	if rec, _ := st.Snapshot(ctx, store.DefaultTeam, "golden"); rec.ID == goldenFirst || rec.SourceSandboxID != "src2" {
		t.Fatalf("golden after retake: %+v", rec)
	}
	if len(h1.deleted) != 1 || h1.deleted[0] != goldenFirst {
		t.Fatalf("agent deletes after retake: %v, want [%s]", h1.deleted, goldenFirst)
	}

	// Delete: 204, then 404 in E2B's shape (the SDK's deleteSnapshot returns false on it).
	if status, body, _ := call(t, "DELETE", hs.URL+"/templates/golden:default", "", key); status != 204 {
		t.Fatalf("delete: %d %s", status, body)
	}
	if _, err := st.Snapshot(ctx, store.DefaultTeam, "golden"); err == nil {
		t.Fatal("deleted snapshot still recorded")
	}
	status, body, _ = call(t, "DELETE", hs.URL+"/templates/golden:default", "", key)
	if status != 404 || body != `{"code":404,"message":"snapshot golden:default not found"}`+"\n" {
		t.Fatalf("delete again: %d %s", status, body)
	}
	status, body, _ = call(t, "POST", hs.URL+"/v2/sandboxes", `{"templateID":"golden:default"}`, key)
	if status != 404 || !strings.Contains(body, `"message":"snapshot golden:default not found"`) {
		t.Fatalf("create from deleted snapshot: %d %s", status, body)
	}
}

// TestSnapshotErrors: what cannot work is refused with E2B's {code, message} and a message
// that says what to fix.
func TestSnapshotErrors(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	startSnapshotAgent(t, st, "h1")
	heartbeat(t, hs.URL, "tpl-host", 4096, 0, nil) // registers template base
	putRunning(t, st, "src", "h1")
	paused := store.Sandbox{ID: "asleep", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h1", State: store.StatePaused, StartedAt: time.Now(), EndAt: time.Now().Add(time.Hour)}
	if err := st.CreateSandbox(ctx, paused); err != nil {
		t.Fatal(err)
	}
	// Snapshots kept on hosts that are down or removed.
	if err := st.PutHost(ctx, store.Host{ID: "down", State: store.HostDown, RPCAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	for _, sn := range []store.Snapshot{
		{ID: "ondown", TeamID: store.DefaultTeam, Name: "ondown", HostID: "down", TemplateID: "base", CPUs: 1, MemoryMiB: 512},
		{ID: "onremoved", TeamID: store.DefaultTeam, HostID: "removed", TemplateID: "base", CPUs: 1, MemoryMiB: 512},
	} {
		if _, err := st.CreateSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"snapshot of unknown sandbox", "POST", "/sandboxes/nosuch/snapshots", `{}`, 404, "sandbox nosuch not found"},
		{"snapshot of paused sandbox", "POST", "/sandboxes/asleep/snapshots", `{}`, 409, "only a running sandbox can be snapshotted"},
		{"bad name", "POST", "/sandboxes/src/snapshots", `{"name":"../x"}`, 400, `snapshot name \"../x\": want lower-case letters`},
		{"other tag", "POST", "/sandboxes/src/snapshots", `{"name":"x:v2"}`, 400, "optionally followed by :default"},
		{"name of a template", "POST", "/sandboxes/src/snapshots", `{"name":"base"}`, 409, `snapshot name \"base\" is a template's`},
		{"delete unknown", "DELETE", "/templates/nosuch", "", 404, "snapshot nosuch not found"},
		{"delete a template", "DELETE", "/templates/base", "", 400, "base is a template, not a snapshot"},
		{"delete on a down host", "DELETE", "/templates/ondown:default", "", 503, "kept on host down, which is not available"},
		{"create on a down host", "POST", "/v2/sandboxes", `{"templateID":"ondown:default"}`, 503, "snapshot ondown:default is kept on host down"},
		{"create from unknown", "POST", "/v2/sandboxes", `{"templateID":"nosuch:default"}`, 404, "snapshot nosuch:default not found"},
		{"list bad limit", "GET", "/snapshots?limit=0", "", 400, "limit must be 1 to 100"},
		{"list bad cursor", "GET", "/snapshots?nextToken=garbage", "", 400, "nextToken is not one this API returned"},
		{"filesystem-only pause with auto-resume", "POST", "/v2/sandboxes", `{"templateID":"base","autoPause":true,"autoPauseMemory":false,"autoResume":{"enabled":true}}`, 400, "autoResume cannot be enabled with autoPauseMemory false"},
		// A removed host took the files with it: the record goes.
		{"delete on a removed host", "DELETE", "/templates/onremoved:default", "", 204, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := call(t, tt.method, hs.URL+tt.path, tt.body, key)
			if status != tt.status || !strings.Contains(body, tt.msg) {
				t.Fatalf("%s %s = %d %s, want %d containing %q", tt.method, tt.path, status, body, tt.status, tt.msg)
			}
			if status >= 400 {
				var e api.Error
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != status || e.Message == "" {
					t.Fatalf("error body %q is not E2B's {code, message}", body)
				}
			}
		})
	}
	if _, err := st.Snapshot(ctx, store.DefaultTeam, "onremoved"); err == nil {
		t.Fatal("snapshot of a removed host still recorded after its delete")
	}
	if _, err := st.Snapshot(ctx, store.DefaultTeam, "ondown"); err != nil {
		t.Fatal("snapshot of a down host lost by a refused delete")
	}
}

// TestFilesystemOnlyPause: pause {"memory": false} and autoPauseMemory false reach the agent as
// filesystem-only pauses and are recorded so, which keeps traffic from resuming the sandbox
// (TestProxyNotRunning); an explicit connect resumes it and clears the mark.
func TestFilesystemOnlyPause(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	key := map[string]string{"X-API-Key": testKey}
	h1 := startSnapshotAgent(t, st, "h1")
	if err := st.PutTemplate(ctx, store.Template{ID: "base", TeamID: store.DefaultTeam, Public: true, Aliases: []string{"base"}, CPUs: 1, MemoryMiB: 512, BuildStatus: "ready"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		putRunning(t, st, id, "h1")
	}
	for _, tc := range []struct{ id, body string }{{"a", `{"memory":false}`}, {"b", `{"memory":true}`}, {"c", ``}} {
		if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/"+tc.id+"/pause", tc.body, key); status != 204 {
			t.Fatalf("pause %s: %d %s", tc.id, status, body)
		}
	}
	for i, want := range []bool{true, false, false} {
		if got := h1.paused[i].GetFilesystemOnly(); got != want {
			t.Fatalf("pause %s: agent filesystem_only = %v, want %v", h1.paused[i].GetSandboxId(), got, want)
		}
	}
	if sb, _ := st.Sandbox(ctx, "a"); sb.State != store.StatePaused || !sb.PausedFilesystemOnly {
		t.Fatalf("a after filesystem-only pause: %+v", sb)
	}
	if sb, _ := st.Sandbox(ctx, "b"); sb.PausedFilesystemOnly {
		t.Fatal("b paused with memory is marked filesystem-only")
	}
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/a/connect", `{"timeout":60}`, key); status != 201 {
		t.Fatalf("connect a: %d %s", status, body)
	}
	if sb, _ := st.Sandbox(ctx, "a"); sb.State != store.StateRunning || sb.PausedFilesystemOnly {
		t.Fatalf("a after connect: %+v", sb)
	}

	// autoPauseMemory false: the timeout's pause keeps only the filesystem.
	status, body, _ := call(t, "POST", hs.URL+"/v2/sandboxes", `{"templateID":"base","autoPause":true,"autoPauseMemory":false,"timeout":1}`, key)
	var created api.Sandbox
	if status != 201 || json.Unmarshal([]byte(body), &created) != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	if sb, _ := st.Sandbox(ctx, created.SandboxID); !sb.AutoPause || !sb.AutoPauseFilesystemOnly {
		t.Fatalf("created with autoPauseMemory false: %+v", sb)
	}
	st.UpdateSandbox(ctx, created.SandboxID, func(x *store.Sandbox) error { x.EndAt = time.Now().Add(-time.Second); return nil })
	s.expire(ctx)
	last := h1.paused[len(h1.paused)-1]
	if last.GetSandboxId() != created.SandboxID || !last.GetFilesystemOnly() {
		t.Fatalf("timeout pause: %+v", last)
	}
	if sb, _ := st.Sandbox(ctx, created.SandboxID); sb.State != store.StatePaused || !sb.PausedFilesystemOnly {
		t.Fatalf("after timeout: %+v", sb)
	}
}
