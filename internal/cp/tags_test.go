package cp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// versionAgent builds at once and records which template versions it was asked to boot and
// delete; deleting one in busy is refused as a real agent refuses a version a sandbox uses.
type versionAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	mu      sync.Mutex
	built   []string
	created []string
	// artifacts are the creates' template artifacts, in order.
	artifacts []string
	deleted   []string
	busy      map[string]bool
}

func (a *versionAgent) BuildTemplate(ctx context.Context, req *connect.Request[pb.BuildTemplateRequest], st *connect.ServerStream[pb.BuildTemplateResponse]) error {
	a.mu.Lock()
	a.built = append(a.built, req.Msg.GetTemplateId())
	a.mu.Unlock()
	return st.Send(&pb.BuildTemplateResponse{Result: &pb.BuildResult{Version: "v-" + req.Msg.GetTemplateId(), EnvdVersion: "0.6.4"}})
}

func (a *versionAgent) Create(ctx context.Context, req *connect.Request[pb.CreateRequest]) (*connect.Response[pb.CreateResponse], error) {
	a.mu.Lock()
	a.created = append(a.created, req.Msg.GetTemplate())
	a.artifacts = append(a.artifacts, req.Msg.GetTemplateArtifact())
	a.mu.Unlock()
	return connect.NewResponse(&pb.CreateResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId(), Template: req.Msg.GetTemplate(), EnvdVersion: "0.6.4"}}), nil
}

func (a *versionAgent) DeleteTemplate(ctx context.Context, req *connect.Request[pb.DeleteTemplateRequest]) (*connect.Response[pb.DeleteTemplateResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy[req.Msg.GetTemplate()] {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("used by a sandbox"))
	}
	a.deleted = append(a.deleted, req.Msg.GetTemplate())
	return connect.NewResponse(&pb.DeleteTemplateResponse{Deleted: true}), nil
}

func (a *versionAgent) last(l *[]string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(*l) == 0 {
		return ""
	}
	return (*l)[len(*l)-1]
}

func (a *versionAgent) deletedNames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.deleted...)
}

// buildVersion runs a whole API build of name (name[:tag], tags) and returns its IDs.
func buildVersion(t *testing.T, url, body string) (templateID, buildID string) {
	t.Helper()
	key := map[string]string{"X-API-Key": testKey}
	status, out, _ := call(t, "POST", url+"/v3/templates", body, key)
	if status != http.StatusAccepted {
		t.Fatalf("request build %s: %d %s", body, status, out)
	}
	var req api.TemplateRequestResponseV3
	_ = json.Unmarshal([]byte(out), &req)
	if status, out, _ := call(t, "POST", fmt.Sprintf("%s/v2/templates/%s/builds/%s", url, req.TemplateID, req.BuildID), `{"fromTemplate":"base","steps":[]}`, key); status != http.StatusAccepted {
		t.Fatalf("start build %s: %d %s", body, status, out)
	}
	if info, _ := pollBuild(t, url, req.TemplateID, req.BuildID); info.Status != "ready" {
		t.Fatalf("build %s: %+v", body, info)
	}
	return req.TemplateID, req.BuildID
}

// TestTemplateTagsAndVersions: each build is a version of its own on the agent, tags pick
// the version a create boots, the tag endpoints answer as E2B's do, and garbage collection
// deletes only versions nothing uses.
func TestTemplateTagsAndVersions(t *testing.T) {
	s, hs, st := newTestCP(t)
	s.gcGrace = 0
	ctx := context.Background()
	agent := &versionAgent{busy: map[string]bool{}}
	startBuildAgent(t, hs.URL, &buildAgent{}) // registers host h1 and the base template ...
	startAgentServer(t, st, "h1", agent)      // ... and points h1 at this agent
	key := map[string]string{"X-API-Key": testKey}

	tplID, b1 := buildVersion(t, hs.URL, `{"name":"x"}`)
	if got := agent.last(&agent.built); got != tplID+"-"+b1 {
		t.Fatalf("agent built %q, want the version name %q", got, tplID+"-"+b1)
	}
	_, b2 := buildVersion(t, hs.URL, `{"name":"x:v2","tags":["beta"]}`)

	listTags := func() map[string]string {
		t.Helper()
		status, body, _ := call(t, "GET", hs.URL+"/templates/x/tags", "", key)
		var tags []api.TemplateTagJSON
		if err := json.Unmarshal([]byte(body), &tags); status != http.StatusOK || err != nil {
			t.Fatalf("list tags: %d %s", status, body)
		}
		out := map[string]string{}
		for _, tg := range tags {
			if tg.CreatedAt.IsZero() {
				t.Fatalf("tag without createdAt: %s", body)
			}
			out[tg.Tag] = tg.BuildID
		}
		return out
	}
	if got := listTags(); len(got) != 3 || got["default"] != b1 || got["v2"] != b2 || got["beta"] != b2 {
		t.Fatalf("tags %v, want default→%s, v2 and beta→%s", got, b1, b2)
	}
	// The list answers by template ID too.
	if status, body, _ := call(t, "GET", hs.URL+"/templates/"+tplID+"/tags", "", key); status != 200 || !strings.Contains(body, b2) {
		t.Fatalf("tags by ID: %d %s", status, body)
	}

	create := func(ref string) (int, string) {
		t.Helper()
		status, body, _ := call(t, "POST", hs.URL+"/sandboxes", fmt.Sprintf(`{"templateID":%q}`, ref), key)
		return status, body
	}
	sandboxOf := func(body string) store.Sandbox {
		t.Helper()
		var sb api.Sandbox
		_ = json.Unmarshal([]byte(body), &sb)
		rec, err := st.Sandbox(ctx, sb.SandboxID)
		if err != nil {
			t.Fatalf("sandbox of %s: %v", body, err)
		}
		return rec
	}
	for _, c := range []struct{ ref, build string }{{"x", b1}, {"x:default", b1}, {"x:v2", b2}, {"x:beta", b2}} {
		status, body := create(c.ref)
		if status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", c.ref, status, body)
		}
		if got := agent.last(&agent.created); got != tplID+"-"+c.build {
			t.Fatalf("create %s booted %q, want version %s", c.ref, got, c.build)
		}
		if rec := sandboxOf(body); rec.BuildID != c.build || rec.TemplateID != tplID {
			t.Fatalf("create %s recorded template %s build %s", c.ref, rec.TemplateID, rec.BuildID)
		}
	}
	if status, body := create("x:nope"); status != http.StatusNotFound || !strings.Contains(body, `tag \"nope\"`) {
		t.Fatalf("create from an unknown tag: %d %s", status, body)
	}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/aliases/x:v2", "", key); status != http.StatusOK {
		t.Fatalf("alias x:v2: %d", status)
	}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/aliases/x:nope", "", key); status != http.StatusNotFound {
		t.Fatalf("alias with an unknown tag: %d, want 404", status)
	}

	// Assigning moves tags to the target's build.
	status, body, _ := call(t, "POST", hs.URL+"/templates/tags", `{"target":"x:v2","tags":["default","Prod"]}`, key)
	var assigned api.AssignedTemplateTags
	if err := json.Unmarshal([]byte(body), &assigned); status != http.StatusCreated || err != nil || assigned.BuildID != b2 ||
		strings.Join(assigned.Tags, ",") != "default,prod" {
		t.Fatalf("assign: %d %s", status, body)
	}
	if status, body := create("x"); status != http.StatusCreated || agent.last(&agent.created) != tplID+"-"+b2 {
		t.Fatalf("create x after default moved: %d %s, booted %s", status, body, agent.last(&agent.created))
	}
	// The bare target means its default tag.
	if status, body, _ := call(t, "POST", hs.URL+"/templates/tags", `{"target":"x","tags":["stable"]}`, key); status != http.StatusCreated || !strings.Contains(body, b2) {
		t.Fatalf("assign from the default: %d %s", status, body)
	}

	for _, c := range []struct {
		method, body, want string
		status             int
	}{
		{"POST", `{"target":"x","tags":[]}`, "at least one tag", 400},
		{"POST", `{"target":"x","tags":[":invalid-tag"]}`, "Invalid tag", 400},
		{"POST", `{"target":"x","tags":["x:"]}`, "Invalid tag", 400},
		{"POST", `{"target":"x:","tags":["a"]}`, "Invalid tag", 400},
		{"POST", `{"target":"x:missing","tags":["a"]}`, `tag \"missing\"`, 404},
		{"POST", `{"target":"nope","tags":["a"]}`, "not found", 404},
		{"POST", `{"target":"base","tags":["a"]}`, "built on the agents", 400},
		{"DELETE", `{"name":"x:v2","tags":["v2"]}`, "contains a tag", 400},
		{"DELETE", `{"name":"x","tags":["default"]}`, "default tag cannot be removed", 400},
		{"DELETE", `{"name":"x","tags":[]}`, "at least one tag", 400},
		{"DELETE", `{"name":"x","tags":["missing"]}`, `tag \"missing\"`, 404},
		{"DELETE", `{"name":"nope","tags":["a"]}`, "not found", 404},
	} {
		if status, body, _ := call(t, c.method, hs.URL+"/templates/tags", c.body, key); status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s /templates/tags %s: %d %s; want %d with %q", c.method, c.body, status, body, c.status, c.want)
		}
	}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/nope/tags", "", key); status != http.StatusNotFound {
		t.Errorf("tags of an unknown template: %d, want 404", status)
	}

	// Another team: a private template is unknown to it (404), a public one not its own (403).
	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	otherKey := "e2b_" + strings.Repeat("ab", 20)
	if err := RegisterKey(ctx, st, otherKey, "other's", "t-other"); err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"X-API-Key": otherKey}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/x/tags", "", other); status != http.StatusNotFound {
		t.Errorf("another team's private template's tags: %d, want 404", status)
	}
	tpl, _ := st.Template(ctx, tplID)
	tpl.Public = true
	if err := st.PutTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/x/tags", "", other); status != http.StatusForbidden {
		t.Errorf("another team's public template's tags: %d, want 403", status)
	}
	if status, _, _ := call(t, "POST", hs.URL+"/templates/tags", `{"target":"x","tags":["mine"]}`, other); status != http.StatusForbidden {
		t.Errorf("tagging another team's template: %d, want 403", status)
	}
	if status, _, _ := call(t, "DELETE", hs.URL+"/templates/tags", `{"name":"x","tags":["v2"]}`, other); status != http.StatusForbidden {
		t.Errorf("untagging another team's template: %d, want 403", status)
	}

	// Garbage collection. b1 has no tag left but sandboxes use it; b3 loses its only tag and
	// nothing uses it.
	_, b3 := buildVersion(t, hs.URL, `{"name":"x:tmp"}`)
	if status, body, _ := call(t, "DELETE", hs.URL+"/templates/tags", `{"name":"x","tags":["tmp"]}`, key); status != http.StatusNoContent {
		t.Fatalf("remove tmp: %d %s", status, body)
	}
	if status, _ := create("x:tmp"); status != http.StatusNotFound {
		t.Fatalf("create from a removed tag: %d, want 404", status)
	}
	// Two replicas collect at once: the version is deleted once.
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	s2.gcGrace = 0
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, srv := range []*Server{s, s2} {
		wg.Add(1)
		go func() { defer wg.Done(); counts[i] = srv.collectBuilds(ctx) }()
	}
	wg.Wait()
	if got := agent.deletedNames(); counts[0]+counts[1] != 1 || len(got) != 1 || got[0] != tplID+"-"+b3 {
		t.Fatalf("gc deleted %v (counts %v), want only version %s", got, counts, b3)
	}
	if b, _ := st.TemplateBuild(ctx, b3); b.DeletedAt.IsZero() {
		t.Fatal("collected build not marked deleted")
	}
	// A version a host still uses is kept, whatever the records say.
	sbs, _, err := st.ListSandboxes(ctx, store.SandboxFilter{TeamID: store.DefaultTeam})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if sb.BuildID == b1 {
			if err := st.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	agent.mu.Lock()
	agent.busy[tplID+"-"+b1] = true
	agent.mu.Unlock()
	if n := s.collectBuilds(ctx); n != 0 {
		t.Fatalf("gc deleted %d builds while the host uses b1", n)
	}
	if b, _ := st.TemplateBuild(ctx, b1); !b.DeletedAt.IsZero() {
		t.Fatal("a build the host refused to delete stays marked deleted")
	}
	agent.mu.Lock()
	agent.busy = map[string]bool{}
	agent.mu.Unlock()
	if n := s.collectBuilds(ctx); n != 1 {
		t.Fatalf("gc deleted %d builds once b1 was free, want 1", n)
	}
	if got := agent.deletedNames(); len(got) != 2 || got[1] != tplID+"-"+b1 {
		t.Fatalf("deleted %v, want b1's version second", got)
	}
	// b2 is tagged and used: it stays.
	if b, _ := st.TemplateBuild(ctx, b2); !b.DeletedAt.IsZero() {
		t.Fatal("gc deleted the tagged build")
	}
}

// TestVersionArtifact: a version's upload, reported in its host's heartbeat, is recorded on
// its build (not as a template of its own), and a create of it goes to another agent, which
// gets the artifact to fetch, when the build's host takes no sandboxes.
func TestVersionArtifact(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	home, other := &versionAgent{}, &versionAgent{}
	startBuildAgent(t, hs.URL, &buildAgent{})
	startAgentServer(t, st, "h1", home)
	tplID, b1 := buildVersion(t, hs.URL, `{"name":"moving"}`)
	version := tplID + "-" + b1
	artifact := "sha256:" + strings.Repeat("c", 64)
	s.registerTemplate(ctx, hostreg.Template{Name: version, Version: "v", EnvdVersion: "0.6.4", Artifact: artifact})
	if b, err := st.TemplateBuild(ctx, b1); err != nil || b.Artifact != artifact {
		t.Fatalf("build after its host reported the upload: %+v, %v", b, err)
	}
	if _, err := st.Template(ctx, version); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a version became a template of its own: %v", err)
	}

	startAgentServer(t, st, "h2", other)
	if err := st.SetHostDraining(ctx, "h1", true); err != nil {
		t.Fatal(err)
	}
	status, body, _ := call(t, "POST", hs.URL+"/sandboxes", `{"templateID":"moving"}`, map[string]string{"X-API-Key": testKey})
	if status != http.StatusCreated {
		t.Fatalf("create while the build's host drains: %d %s", status, body)
	}
	if got := other.last(&other.created); got != version || other.last(&other.artifacts) != artifact {
		t.Fatalf("other host booted %q with artifact %q; want %s from %s", got, other.last(&other.artifacts), version, artifact)
	}
}

// TestDeletedVersionLeavesReturningHost: a host that is down when a version is collected
// keeps its copy, and loses it once it is back and its heartbeat lists the copy; a version
// that is not deleted stays on it.
func TestDeletedVersionLeavesReturningHost(t *testing.T) {
	s, hs, st := newTestCP(t)
	s.gcGrace, s.gcRetryAfter = 0, 0
	ctx := context.Background()
	home, away := &versionAgent{busy: map[string]bool{}}, &versionAgent{busy: map[string]bool{}}
	startBuildAgent(t, hs.URL, &buildAgent{})
	startAgentServer(t, st, "h1", home)
	startAgentServer(t, st, "h2", away)
	h2, err := st.Host(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := func(token string, templates ...string) string {
		t.Helper()
		hb := hostreg.Heartbeat{RPCAddr: h2.RPCAddr, ProxyAddr: h2.ProxyAddr, Runtime: "gvisor", CPUs: 2, MemoryTotalMiB: 8192}
		for _, n := range templates {
			hb.Templates = append(hb.Templates, hostreg.Template{Name: n, Version: "v", EnvdVersion: "0.6.4"})
		}
		b, _ := json.Marshal(hb)
		hdr := map[string]string{"Authorization": "Bearer " + testAgentToken, hostreg.HostTokenHeader: token}
		status, body, _ := call(t, "POST", hs.URL+hostreg.Path("h2"), string(b), hdr)
		if status != http.StatusOK && status != http.StatusNoContent {
			t.Fatalf("heartbeat: %d %s", status, body)
		}
		var reg hostreg.Answer
		_ = json.Unmarshal([]byte(body), &reg)
		return reg.HostToken
	}
	token := heartbeat("")
	if err := st.SetHostDraining(ctx, "h2", true); err != nil { // builds go to h1
		t.Fatal(err)
	}

	tplID, kept := buildVersion(t, hs.URL, `{"name":"back"}`)
	_, gone := buildVersion(t, hs.URL, `{"name":"back:tmp"}`)
	if status, body, _ := call(t, "DELETE", hs.URL+"/templates/tags", `{"name":"back","tags":["tmp"]}`, map[string]string{"X-API-Key": testKey}); status != http.StatusNoContent {
		t.Fatalf("remove tag tmp: %d %s", status, body)
	}
	keptName, goneName := tplID+"-"+kept, tplID+"-"+gone
	if marked, err := st.MarkHostDown(ctx, "h2", time.Now().Add(time.Hour)); err != nil || !marked {
		t.Fatalf("mark h2 down: %v, %v", marked, err)
	}
	if n := s.collectBuilds(ctx); n != 1 {
		t.Fatalf("gc deleted %d builds, want 1", n)
	}
	if got := home.deletedNames(); len(got) != 1 || got[0] != goneName {
		t.Fatalf("the ready host deleted %v, want %s", got, goneName)
	}
	if got := away.deletedNames(); len(got) != 0 {
		t.Fatalf("the down host was asked to delete %v", got)
	}

	heartbeat(token, "base", keptName, goneName) // back, with both copies
	deadline := time.Now().Add(10 * time.Second)
	for len(away.deletedNames()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	heartbeat(token, keptName) // a later heartbeat: the live version is still not deleted
	time.Sleep(200 * time.Millisecond)
	if got := away.deletedNames(); len(got) != 1 || got[0] != goneName {
		t.Fatalf("the returned host deleted %v, want only %s", got, goneName)
	}
}
