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

// historyAgent answers Metrics from a fixed history, as an agent's metrics log does: the
// samples whose time is in the request's range, oldest first.
type historyAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	samples map[string][]time.Time
}

func (a *historyAgent) Metrics(_ context.Context, req *connect.Request[pb.MetricsRequest]) (*connect.Response[pb.MetricsResponse], error) {
	times, ok := a.samples[req.Msg.GetSandboxId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s not on this host", req.Msg.GetSandboxId()))
	}
	res := &pb.MetricsResponse{}
	for _, at := range times {
		if (req.Msg.Start != nil && at.Before(req.Msg.GetStart().AsTime())) || (req.Msg.End != nil && at.After(req.Msg.GetEnd().AsTime())) {
			continue
		}
		res.Samples = append(res.Samples, &pb.MetricSample{Time: timestamppb.New(at), CpuCount: 2, MemTotal: 1024, MemUsed: 512})
	}
	return connect.NewResponse(res), nil
}

// TestMetricsRange: GET /sandboxes/{id}/metrics returns the agent's samples of the sandbox
// whose time is inside [start, end] (Unix seconds, inclusive; start defaults to the
// sandbox's start, end to now), oldest first, E2B's JSON; a paused sandbox its history; one
// its agent does not have none; bad bounds a 400 naming the parameter.
func TestMetricsRange(t *testing.T) {
	started := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	at := func(s float64) time.Time { return started.Add(time.Duration(s * float64(time.Second))) }
	agent := &historyAgent{samples: map[string][]time.Time{
		// One sample from before the sandbox's start (as after a clock step): the default
		// start leaves it out.
		"m1":     {at(-5), at(10.4), at(20.4), at(30.4), at(40.4), at(50.4)},
		"paused": {at(10), at(15)},
	}}
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	startAgentServer(t, st, "h", agent)
	up, err := st.Host(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	st.PutHost(ctx, store.Host{ID: "down", State: store.HostDown, RPCAddr: up.RPCAddr})
	for _, sb := range []store.Sandbox{
		{ID: "m1", State: store.StateRunning, HostID: "h"},
		{ID: "paused", State: store.StatePaused, HostID: "h"},
		{ID: "elsewhere", State: store.StateRunning, HostID: "h"}, // the agent lost it (restarted)
		{ID: "hostdown", State: store.StateRunning, HostID: "down"},
	} {
		sb.TeamID, sb.TemplateID, sb.StartedAt, sb.EndAt = store.DefaultTeam, "base", started, started.Add(time.Hour)
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	s0, now := started.Unix(), time.Now().Unix()
	key := map[string]string{"X-API-Key": testKey}

	tests := []struct {
		name, id, query string
		status          int
		want            []int64 // timestampUnix of the samples, when 200
		msg             string
	}{
		{"no range: since the sandbox's start", "m1", "", 200, []int64{s0 + 10, s0 + 20, s0 + 30, s0 + 40, s0 + 50}, ""},
		{"inclusive range", "m1", fmt.Sprintf("start=%d&end=%d", s0+10, s0+30), 200, []int64{s0 + 10, s0 + 20, s0 + 30}, ""},
		{"only start", "m1", fmt.Sprintf("start=%d", s0+40), 200, []int64{s0 + 40, s0 + 50}, ""},
		{"start before the sandbox's", "m1", fmt.Sprintf("start=%d&end=%d", s0-10, s0+10), 200, []int64{s0 - 5, s0 + 10}, ""},
		{"range before the sandbox", "m1", fmt.Sprintf("start=%d&end=%d", s0-3600, s0-3590), 200, []int64{}, ""},
		{"range starting later", "m1", fmt.Sprintf("start=%d", now+3600), 200, []int64{}, ""},
		{"start in milliseconds is still an integer", "m1", fmt.Sprintf("start=%d", now*1000), 200, []int64{}, ""},
		{"paused sandbox keeps its history", "paused", "", 200, []int64{s0 + 10, s0 + 15}, ""},
		{"agent no longer has it", "elsewhere", "", 200, []int64{}, ""},
		{"host down", "hostdown", "", 503, nil, "host down"},
		{"unknown sandbox", "nope", "", 404, nil, "nope"},
		{"start after end", "m1", fmt.Sprintf("start=%d&end=%d", now, now-1), 400, nil, "start"},
		{"start not a number", "m1", "start=yesterday", 400, nil, "start must be a Unix time in seconds"},
		{"negative end", "m1", "end=-5", 400, nil, "end must be a Unix time in seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := call(t, "GET", hs.URL+"/sandboxes/"+tt.id+"/metrics?"+tt.query, "", key)
			if status != tt.status || !strings.Contains(body, tt.msg) {
				t.Fatalf("%d %s, want %d containing %q", status, body, tt.status, tt.msg)
			}
			if status != 200 {
				return
			}
			var got []map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil || got == nil {
				t.Fatalf("%s: not a JSON list: %v", body, err)
			}
			ts := []int64{}
			for _, m := range got {
				ts = append(ts, int64(m["timestampUnix"].(float64)))
				for _, k := range []string{"timestamp", "cpuCount", "cpuUsedPct", "memUsed", "memTotal", "memCache", "diskUsed", "diskTotal"} {
					if _, ok := m[k]; !ok {
						t.Fatalf("sample %v lacks E2B's %q", m, k)
					}
				}
			}
			if fmt.Sprint(ts) != fmt.Sprint(tt.want) {
				t.Fatalf("samples at %v, want %v", ts, tt.want)
			}
		})
	}
}
