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

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/store"
)

// resumingAgent answers Resume, as an agent holding a snapshot does.
type resumingAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	resumed chan string
}

func (a *resumingAgent) Resume(_ context.Context, req *connect.Request[pb.ResumeRequest]) (*connect.Response[pb.ResumeResponse], error) {
	a.resumed <- req.Msg.GetSandboxId()
	return connect.NewResponse(&pb.ResumeResponse{Sandbox: &pb.Sandbox{SandboxId: req.Msg.GetSandboxId()}}), nil
}

// TestProxyNotRunning: what the proxy answers for a sandbox in each state. Those that are not
// running and will not run on this traffic get E2B's 502 {"message", "sandboxId", "code"},
// which the SDKs read as "not running" (isRunning() false); transitional states are 409 and a
// down host 503, which the SDKs raise as errors; a paused sandbox with auto-resume is resumed
// and served.
func TestProxyNotRunning(t *testing.T) {
	agentProxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("served " + r.Header.Get("E2b-Sandbox-Id")))
	}))
	t.Cleanup(agentProxy.Close)
	agent := &resumingAgent{resumed: make(chan string, 10)}
	rpc := httptest.NewUnstartedServer(http.NewServeMux())
	path, h := hostagentv1connect.NewHostAgentServiceHandler(agent)
	rpc.Config.Handler.(*http.ServeMux).Handle(path, h)
	rpc.Config.Protocols = new(http.Protocols)
	rpc.Config.Protocols.SetUnencryptedHTTP2(true)
	rpc.Start()
	t.Cleanup(rpc.Close)

	s, _, st := newTestCP(t)
	ctx := context.Background()
	proxyAddr, rpcAddr := strings.TrimPrefix(agentProxy.URL, "http://"), strings.TrimPrefix(rpc.URL, "http://")
	if err := st.PutHost(ctx, store.Host{ID: "up", State: store.HostReady, ProxyAddr: proxyAddr, RPCAddr: rpcAddr}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutHost(ctx, store.Host{ID: "down", State: store.HostDown, ProxyAddr: proxyAddr, RPCAddr: rpcAddr}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, sb := range []store.Sandbox{
		{ID: "running", State: store.StateRunning, HostID: "up"},
		{ID: "paused", State: store.StatePaused, HostID: "up"},
		{ID: "autoresume", State: store.StatePaused, HostID: "up", AutoResume: true},
		{ID: "fsonly", State: store.StatePaused, HostID: "up", AutoResume: true, PausedFilesystemOnly: true},
		{ID: "killing", State: store.StateStopping, HostID: "up"},
		{ID: "pausing", State: store.StatePausing, HostID: "up"},
		{ID: "resuming", State: store.StateResuming, HostID: "up"},
		{ID: "hostdown", State: store.StateRunning, HostID: "down"},
	} {
		sb.TeamID, sb.TemplateID, sb.StartedAt, sb.EndAt, sb.AllowPublicTraffic = store.DefaultTeam, "base", now, now.Add(time.Hour), true
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	ps := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(ps.Close)

	tests := []struct {
		name, id string
		status   int
		msg      string // in the message, or the body when the request is served
		e2b      bool   // E2B's not-found body
	}{
		{"running", "running", 200, "served running", false},
		{"paused without auto-resume", "paused", 502, "The sandbox was not found: sandbox paused is paused and does not resume on traffic", true},
		{"paused with auto-resume", "autoresume", 200, "served autoresume", false},
		{"paused keeping only its filesystem", "fsonly", 502, "The sandbox was not found: sandbox fsonly is paused keeping only its filesystem, which traffic never resumes", true},
		{"being killed", "killing", 502, "The sandbox was not found: sandbox killing is being killed", true},
		{"killed, expired or unknown", "gone", 502, "The sandbox was not found: sandbox gone is not running", true},
		{"pausing", "pausing", 409, "sandbox pausing is pausing", false},
		{"resuming", "resuming", 409, "sandbox resuming is resuming", false},
		{"host down", "hostdown", 503, "host down of sandbox hostdown is down", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := call(t, "GET", ps.URL+"/health", "", map[string]string{"E2b-Sandbox-Id": tt.id, "E2b-Sandbox-Port": "49983"})
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, body, tt.status)
			}
			if status == 200 {
				if body != tt.msg {
					t.Fatalf("body %q, want %q", body, tt.msg)
				}
				return
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Fatalf("body %q (%s) is not JSON: %v", body, hdr.Get("Content-Type"), err)
			}
			if msg, _ := e["message"].(string); !strings.Contains(msg, tt.msg) {
				t.Fatalf("message %q, want it to contain %q", msg, tt.msg)
			}
			if e["code"] != float64(status) || e["sandboxId"] != tt.id {
				t.Fatalf("body %v lacks code %d and sandboxId %q", e, status, tt.id)
			}
			if _, hasPort := e["port"]; tt.e2b && (hasPort || len(e) != 3) {
				t.Fatalf("not-found body %v: want exactly E2B's message, sandboxId and code", e)
			}
		})
	}
	select {
	case id := <-agent.resumed:
		if id != "autoresume" {
			t.Fatalf("resumed %q", id)
		}
	default:
		t.Fatal("the auto-resume sandbox was not resumed on the agent")
	}
	if sb, err := st.Sandbox(ctx, "autoresume"); err != nil || sb.State != store.StateRunning {
		t.Fatalf("after auto-resume: %+v %v", sb, err)
	}

	// A browser gets a page with the same status.
	status, body, hdr := call(t, "GET", ps.URL+"/", "", map[string]string{"E2b-Sandbox-Id": "gone", "E2b-Sandbox-Port": "8080", "Accept": "text/html"})
	if status != 502 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(body, "The sandbox was not found") {
		t.Fatalf("browser: %d %s %q", status, hdr.Get("Content-Type"), body)
	}
}

// TestMetricsRange: GET /sandboxes/{id}/metrics returns the sample read now only when it
// falls inside [start, end] (inclusive; start defaults to the sandbox's start, end to now),
// and refuses bad bounds with a 400 naming the parameter.
func TestMetricsRange(t *testing.T) {
	asked := 0
	agentProxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked++
		fmt.Fprintf(w, `{"ts":%d,"cpu_count":2,"mem_total":1024}`, time.Now().Unix())
	}))
	t.Cleanup(agentProxy.Close)
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	st.PutHost(ctx, store.Host{ID: "h", State: store.HostReady, ProxyAddr: strings.TrimPrefix(agentProxy.URL, "http://")})
	started := time.Now().Add(-time.Minute).UTC()
	st.CreateSandbox(ctx, store.Sandbox{ID: "m1", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning, StartedAt: started, EndAt: started.Add(time.Hour)})
	before, now := started.Add(-time.Hour).Unix(), time.Now().Unix()
	key := map[string]string{"X-API-Key": testKey}

	tests := []struct {
		name, query string
		status      int
		samples     int // when 200
		msg         string
		asksEnvd    bool
	}{
		{"no range", "", 200, 1, "", true},
		{"range around now", fmt.Sprintf("start=%d&end=%d", started.Unix(), now+60), 200, 1, "", true},
		{"only start", fmt.Sprintf("start=%d", started.Unix()), 200, 1, "", true},
		{"range before the sandbox", fmt.Sprintf("start=%d&end=%d", before, before+10), 200, 0, "", false},
		{"range ending before now", fmt.Sprintf("start=%d&end=%d", started.Unix(), now-30), 200, 0, "", false},
		{"range starting later", fmt.Sprintf("start=%d", now+3600), 200, 0, "", true},
		{"start after end", fmt.Sprintf("start=%d&end=%d", now, now-1), 400, 0, "start", false},
		{"start not a number", "start=yesterday", 400, 0, "start must be a Unix time in seconds", false},
		{"negative end", "end=-5", 400, 0, "end must be a Unix time in seconds", false},
		{"start in milliseconds is still an integer", fmt.Sprintf("start=%d", now*1000), 200, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked = 0
			status, body, _ := call(t, "GET", hs.URL+"/sandboxes/m1/metrics?"+tt.query, "", key)
			if status != tt.status || !strings.Contains(body, tt.msg) {
				t.Fatalf("%d %s, want %d containing %q", status, body, tt.status, tt.msg)
			}
			if (asked > 0) != tt.asksEnvd {
				t.Errorf("asked envd %d times, want asked: %v", asked, tt.asksEnvd)
			}
			if status != 200 {
				return
			}
			var got []SandboxMetric
			if err := json.Unmarshal([]byte(body), &got); err != nil || len(got) != tt.samples {
				t.Fatalf("%s: %d samples (%v), want %d", body, len(got), err, tt.samples)
			}
		})
	}
}
