package cp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// buildAgent answers BuildTemplate with a scripted log and result once release is closed.
type buildAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	release chan struct{}
	got     chan *pb.BuildTemplateRequest
	lines   int
	result  *pb.BuildResult
}

func (a *buildAgent) BuildTemplate(ctx context.Context, req *connect.Request[pb.BuildTemplateRequest], st *connect.ServerStream[pb.BuildTemplateResponse]) error {
	a.got <- req.Msg
	<-a.release
	for i := range a.lines {
		if err := st.Send(&pb.BuildTemplateResponse{Log: &pb.BuildLogEntry{Timestamp: timestamppb.Now(), Level: "info", Message: fmt.Sprintf("line %d", i), Step: "1"}}); err != nil {
			return err
		}
	}
	if a.result.GetError() != "" {
		_ = st.Send(&pb.BuildTemplateResponse{Log: &pb.BuildLogEntry{Timestamp: timestamppb.Now(), Level: "error", Message: "Build failed", Step: a.result.GetErrorStep()}})
	}
	return st.Send(&pb.BuildTemplateResponse{Result: a.result})
}

func startBuildAgent(t *testing.T, hsURL string, a *buildAgent) {
	t.Helper()
	_, h := hostagentv1connect.NewHostAgentServiceHandler(a)
	rpc := httptest.NewUnstartedServer(h)
	rpc.Config.Protocols = new(http.Protocols)
	rpc.Config.Protocols.SetUnencryptedHTTP2(true)
	rpc.Start()
	t.Cleanup(rpc.Close)
	hb := hostreg.Heartbeat{RPCAddr: strings.TrimPrefix(rpc.URL, "http://"), ProxyAddr: "127.0.0.1:2", Runtime: "gvisor", CPUs: 2,
		MemoryTotalMiB: 4096, Templates: []hostreg.Template{{Name: "base", Version: "v1", EnvdVersion: "0.6.4"}}}
	b, _ := json.Marshal(hb)
	if status, body, _ := call(t, "POST", hsURL+hostreg.Path("h1"), string(b), map[string]string{"Authorization": "Bearer " + testAgentToken}); status != http.StatusOK && status != http.StatusNoContent {
		t.Fatalf("heartbeat: %d %s", status, body)
	}
}

type buildInfo struct {
	Status     string
	LogEntries []api.BuildLogEntry
	Reason     *api.BuildStatusReason
}

// pollBuild polls the status endpoint as the SDK does: logsOffset grows by the entries
// received, and polling goes on until the build ended and a poll returned no entries.
func pollBuild(t *testing.T, url, tplID, buildID string) (buildInfo, int) {
	t.Helper()
	key := map[string]string{"X-API-Key": testKey}
	offset := 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		status, body, _ := call(t, "GET", fmt.Sprintf("%s/templates/%s/builds/%s/status?logsOffset=%d", url, tplID, buildID, offset), "", key)
		if status != http.StatusOK {
			t.Fatalf("status: %d %s", status, body)
		}
		var info buildInfo
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatal(err)
		}
		if len(info.LogEntries) > 100 {
			t.Fatalf("%d entries in one answer, want at most 100", len(info.LogEntries))
		}
		offset += len(info.LogEntries)
		if (info.Status == "ready" || info.Status == "error") && len(info.LogEntries) == 0 {
			return info, offset
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("build did not end")
	return buildInfo{}, 0
}

// TestTemplateBuildStateMachine drives the SDK's REST sequence against a control plane with
// a scripted agent: waiting → building → ready | error, log paging by offset, the reason's
// step, and a failed rebuild that keeps the previous good build.
func TestTemplateBuildStateMachine(t *testing.T) {
	_, hs, st := newTestCP(t)
	agent := &buildAgent{release: make(chan struct{}), got: make(chan *pb.BuildTemplateRequest, 1), lines: 250, result: &pb.BuildResult{Version: "v-1", EnvdVersion: "0.6.4"}}
	startBuildAgent(t, hs.URL, agent)
	key := map[string]string{"X-API-Key": testKey}

	status, body, _ := call(t, "POST", hs.URL+"/v3/templates", `{"name":"my-tpl","cpuCount":1,"memoryMB":1024}`, key)
	if status != http.StatusAccepted {
		t.Fatalf("request build: %d %s", status, body)
	}
	var req api.TemplateRequestResponseV3
	_ = json.Unmarshal([]byte(body), &req)
	if len(req.TemplateID) != 20 || !uuidRE.MatchString(req.BuildID) || req.Aliases[0] != "my-tpl" || req.Tags[0] != "default" {
		t.Fatalf("request answer: %s", body)
	}
	statusURL := fmt.Sprintf("%s/templates/%s/builds/%s/status", hs.URL, req.TemplateID, req.BuildID)
	if _, body, _ := call(t, "GET", statusURL, "", key); !strings.Contains(body, `"status":"waiting"`) {
		t.Fatalf("before start: %s", body)
	}
	// A sandbox of a template without a ready build is refused.
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes", `{"templateID":"my-tpl"}`, key); status != http.StatusBadRequest || !strings.Contains(body, "no ready build") {
		t.Fatalf("create before ready: %d %s", status, body)
	}
	// COPY of files never uploaded is refused before anything runs.
	hash := strings.Repeat("ab", 32)
	start := fmt.Sprintf("%s/v2/templates/%s/builds/%s", hs.URL, req.TemplateID, req.BuildID)
	copyStep := fmt.Sprintf(`{"fromTemplate":"base","steps":[{"type":"COPY","args":["a.txt","a.txt","",""],"filesHash":"%s","forceUpload":true}]}`, hash)
	status, body, _ = call(t, "GET", fmt.Sprintf("%s/templates/%s/files/%s", hs.URL, req.TemplateID, hash), "", key)
	var up api.TemplateBuildFileUpload
	_ = json.Unmarshal([]byte(body), &up)
	if status != http.StatusCreated || up.Present || up.URL == "" {
		t.Fatalf("files: %d %s", status, body)
	}
	// The upload URL is signed: a tampered one is refused, the real one accepted.
	if status, _, _ := call(t, "PUT", strings.Replace(up.URL, "token=", "token=00", 1), "x", nil); status != http.StatusForbidden {
		t.Fatalf("tampered upload URL: %d, want 403", status)
	}
	if status, body, _ := call(t, "PUT", up.URL, "archive bytes", nil); status != http.StatusOK {
		t.Fatalf("upload: %d %s", status, body)
	}
	if _, body, _ := call(t, "GET", fmt.Sprintf("%s/templates/%s/files/%s", hs.URL, req.TemplateID, hash), "", key); !strings.Contains(body, `"present":true`) {
		t.Fatalf("files after upload: %s", body)
	}

	if status, body, _ := call(t, "POST", start, copyStep, key); status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, body)
	}
	got := <-agent.got
	if got.GetFromTemplate() != "base" || len(got.GetFiles()) != 1 || string(got.GetFiles()[0].GetData()) != "archive bytes" {
		t.Fatalf("agent got %v", got)
	}
	if _, body, _ := call(t, "GET", statusURL, "", key); !strings.Contains(body, `"status":"building"`) {
		t.Fatalf("right after start: %s, want building", body)
	}
	if status, body, _ := call(t, "POST", start, copyStep, key); status != http.StatusBadRequest || !strings.Contains(body, "not in waiting state") {
		t.Fatalf("second start: %d %s", status, body)
	}
	close(agent.release)
	info, n := pollBuild(t, hs.URL, req.TemplateID, req.BuildID)
	if info.Status != "ready" || n != 250 || info.Reason != nil {
		t.Fatalf("build: %+v after %d entries, want ready after 250", info, n)
	}
	if status, body, _ := call(t, "GET", hs.URL+"/templates/aliases/my-tpl", "", key); status != http.StatusOK || !strings.Contains(body, req.TemplateID) {
		t.Fatalf("alias: %d %s", status, body)
	}
	if status, _, _ := call(t, "GET", hs.URL+"/templates/aliases/nope", "", key); status != http.StatusNotFound {
		t.Fatalf("unknown alias: %d, want 404", status)
	}

	// A rebuild that fails at step 2 reports it and keeps the first build.
	agent.release, agent.lines = make(chan struct{}), 3
	agent.result = &pb.BuildResult{Error: "failed to run command 'false': exit status 1", ErrorStep: "2"}
	status, body, _ = call(t, "POST", hs.URL+"/v3/templates", `{"name":"my-tpl"}`, key)
	var re api.TemplateRequestResponseV3
	_ = json.Unmarshal([]byte(body), &re)
	if status != http.StatusAccepted || re.TemplateID != req.TemplateID || re.BuildID == req.BuildID {
		t.Fatalf("rebuild request: %d %s", status, body)
	}
	if status, body, _ := call(t, "POST", fmt.Sprintf("%s/v2/templates/%s/builds/%s", hs.URL, re.TemplateID, re.BuildID),
		`{"fromImage":"e2bdev/base","steps":[{"type":"RUN","args":["true"]},{"type":"RUN","args":["false"]}]}`, key); status != http.StatusAccepted {
		t.Fatalf("rebuild start: %d %s", status, body)
	}
	<-agent.got
	close(agent.release)
	info, _ = pollBuild(t, hs.URL, re.TemplateID, re.BuildID)
	if info.Status != "error" || info.Reason == nil || info.Reason.Step != "2" || !strings.Contains(info.Reason.Message, "exit status 1") || len(info.Reason.LogEntries) != 1 {
		t.Fatalf("failed rebuild: %+v %+v", info, info.Reason)
	}
	tpl, err := st.Template(context.Background(), "my-tpl")
	if err != nil || tpl.BuildID != req.BuildID || tpl.BuildStatus != "ready" {
		t.Fatalf("template after a failed rebuild: %+v, %v; want the first build still in use", tpl, err)
	}
	// GET /templates/{id} lists both builds, newest first, as E2B's TemplateWithBuilds does.
	status, body, _ = call(t, "GET", hs.URL+"/templates/"+req.TemplateID, "", key)
	var withBuilds api.TemplateWithBuilds
	if err := json.Unmarshal([]byte(body), &withBuilds); status != http.StatusOK || err != nil || len(withBuilds.Builds) != 2 ||
		withBuilds.Builds[0].BuildID != re.BuildID || withBuilds.Builds[0].Status != "error" ||
		withBuilds.Builds[1].BuildID != req.BuildID || withBuilds.Builds[1].Status != "ready" || withBuilds.Builds[1].FinishedAt == nil {
		t.Fatalf("template with builds: %d %s", status, body)
	}
}

// TestTemplateBuildRefusals: what the API refuses, with E2B's statuses.
func TestTemplateBuildRefusals(t *testing.T) {
	_, hs, _ := newTestCP(t)
	startBuildAgent(t, hs.URL, &buildAgent{})
	key := map[string]string{"X-API-Key": testKey}
	for _, c := range []struct {
		body, want string
		status     int
	}{
		{`{}`, "Name is required", 400},
		{`{"name":"Bad Name!"}`, "Invalid name", 400},
		{`{"name":"x:V-1!"}`, "Invalid tag", 400},
		{`{"name":"x","tags":["6b3f0d6e-0000-4000-8000-000000000001"]}`, "not a UUID", 400},
		{`{"name":"x","tags":[""]}`, "Invalid tag", 400},
		{`{"name":"x:"}`, "Invalid tag", 400},
		{`{"name":"x","cpuCount":3}`, "CPU count", 400},
		{`{"name":"x","memoryMB":100}`, "Memory", 400},
		{`{"name":"base"}`, "built on the agents", 409},
	} {
		if status, body, _ := call(t, "POST", hs.URL+"/v3/templates", c.body, key); status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("POST /v3/templates %s: %d %s; want %d with %q", c.body, status, body, c.status, c.want)
		}
	}
	for _, c := range []struct {
		body, want string
	}{
		{`{"fromImage":"Not An Image!","steps":[]}`, "not a valid image reference"},
		{`{"fromImage":"ubuntu:22.04","fromImageRegistry":{"type":"aws","awsAccessKeyId":"a","awsSecretAccessKey":"b","awsRegion":"c"},"steps":[]}`,
			`fromImageRegistry type \"aws\" (fromAWSRegistry) is not supported: Hearth pulls with a username and password only (type \"registry\"`},
		{`{"fromImage":"ubuntu:22.04","fromImageRegistry":{"type":"gcp","serviceAccountJson":"{}"},"steps":[]}`,
			`fromImageRegistry type \"gcp\" (fromGCPRegistry) is not supported`},
		{`{"fromImage":"ubuntu:22.04","fromImageRegistry":{"type":"registry","username":"u"},"steps":[]}`, "both username and password are required"},
		{`{"fromTemplate":"base","fromImageRegistry":{"type":"registry","username":"u","password":"p"},"steps":[]}`, "fromImageRegistry goes with fromImage"},
		{`{"fromTemplate":"nope","steps":[]}`, "not found: build it first"},
		{`{"fromTemplate":"base","steps":[{"type":"FROB","args":[]}]}`, "unknown step type"},
		{`{"fromTemplate":"base","steps":[{"type":"COPY","args":["a","b"]}]}`, "COPY requires files hash"},
	} {
		_, body, _ := call(t, "POST", hs.URL+"/v3/templates", `{"name":"refused"}`, key)
		var req api.TemplateRequestResponseV3
		_ = json.Unmarshal([]byte(body), &req)
		status, body, _ := call(t, "POST", fmt.Sprintf("%s/v2/templates/%s/builds/%s", hs.URL, req.TemplateID, req.BuildID), c.body, key)
		if status != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("start %s: %d %s; want 400 with %q", c.body, status, body, c.want)
		}
		// The refused build is over, with the reason at its base.
		_, body, _ = call(t, "GET", fmt.Sprintf("%s/templates/%s/builds/%s/status", hs.URL, req.TemplateID, req.BuildID), "", key)
		if !strings.Contains(body, `"status":"error"`) || !strings.Contains(body, `"step":"base"`) {
			t.Errorf("status after a refused start: %s", body)
		}
	}
	if status, body, _ := call(t, "GET", hs.URL+"/templates/x/builds/not-a-uuid/status", "", key); status != 400 || !strings.Contains(body, "Invalid build ID") {
		t.Errorf("bad build ID: %d %s", status, body)
	}
	if status, body, _ := call(t, "GET", hs.URL+"/templates/x/builds/"+newBuildID()+"/status", "", key); status != 400 || !strings.Contains(body, "not found") {
		t.Errorf("unknown build: %d %s", status, body)
	}
}

// TestTemplateBuildFromImage: a build from an OCI image goes to an agent with the image
// reference and the registry credentials, which the stored recipe does not keep; the SDK's
// default image is Hearth's base template.
func TestTemplateBuildFromImage(t *testing.T) {
	_, hs, st := newTestCP(t)
	agent := &buildAgent{release: make(chan struct{}), got: make(chan *pb.BuildTemplateRequest, 1), result: &pb.BuildResult{Version: "v-1"}}
	close(agent.release)
	startBuildAgent(t, hs.URL, agent)
	key := map[string]string{"X-API-Key": testKey}
	for _, c := range []struct {
		body                           string
		fromImage, fromTemplate, login string
	}{
		{`{"fromImage":"127.0.0.1:5000/test/debian:12","fromImageRegistry":{"type":"registry","username":"alice","password":"s3cret"},"steps":[]}`,
			"127.0.0.1:5000/test/debian:12", "", "alice:s3cret"},
		{`{"fromImage":"python:3","steps":[]}`, "python:3", "", ":"},
		{`{"fromImage":"e2bdev/base:latest","steps":[]}`, "", "base", ":"},
	} {
		_, body, _ := call(t, "POST", hs.URL+"/v3/templates", `{"name":"from-image"}`, key)
		var req api.TemplateRequestResponseV3
		_ = json.Unmarshal([]byte(body), &req)
		if status, body, _ := call(t, "POST", fmt.Sprintf("%s/v2/templates/%s/builds/%s", hs.URL, req.TemplateID, req.BuildID), c.body, key); status != http.StatusAccepted {
			t.Fatalf("start %s: %d %s", c.body, status, body)
		}
		got := <-agent.got
		if got.GetFromImage() != c.fromImage || got.GetFromTemplate() != c.fromTemplate || got.GetRegistryUsername()+":"+got.GetRegistryPassword() != c.login {
			t.Errorf("%s: agent got image %q template %q login %q:%q; want %q %q %q", c.body, got.GetFromImage(), got.GetFromTemplate(),
				got.GetRegistryUsername(), got.GetRegistryPassword(), c.fromImage, c.fromTemplate, c.login)
		}
		pollBuild(t, hs.URL, req.TemplateID, req.BuildID)
		b, err := st.TemplateBuild(context.Background(), req.BuildID)
		if err != nil || strings.Contains(b.Recipe, "s3cret") || !strings.Contains(b.Recipe, c.fromImage) {
			t.Errorf("stored recipe %s (%v): want the image and no password", b.Recipe, err)
		}
	}
}

// TestTemplateBuildOrphaned: a build whose control plane stopped following it (its record
// went stale) ends in error at the next status poll instead of building forever.
func TestTemplateBuildOrphaned(t *testing.T) {
	_, hs, st := newTestCP(t)
	key := map[string]string{"X-API-Key": testKey}
	_, body, _ := call(t, "POST", hs.URL+"/v3/templates", `{"name":"orphan"}`, key)
	var req api.TemplateRequestResponseV3
	_ = json.Unmarshal([]byte(body), &req)
	ctx := context.Background()
	if _, err := st.UpdateTemplateBuild(ctx, req.BuildID, func(b *store.TemplateBuild) error { b.Status = store.BuildBuilding; return nil }); err != nil {
		t.Fatal(err)
	}
	statusURL := fmt.Sprintf("%s/templates/%s/builds/%s/status", hs.URL, req.TemplateID, req.BuildID)
	if _, body, _ := call(t, "GET", statusURL, "", key); !strings.Contains(body, `"status":"building"`) {
		t.Fatalf("fresh build: %s", body)
	}
	// A record untouched for longer than the lease (UpdateTemplateBuild stamps now, so a new one).
	b, _ := st.TemplateBuild(ctx, req.BuildID)
	b.ID, b.UpdatedAt, b.CreatedAt = newBuildID(), time.Now().Add(-buildLeaseExpiry-time.Minute), time.Now().Add(-time.Hour)
	if err := st.CreateTemplateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	statusURL = fmt.Sprintf("%s/templates/%s/builds/%s/status", hs.URL, req.TemplateID, b.ID)
	if _, body, _ := call(t, "GET", statusURL, "", key); !strings.Contains(body, `"status":"error"`) || !strings.Contains(body, "stopped before it ended") {
		t.Fatalf("stale build: %s", body)
	}
}
