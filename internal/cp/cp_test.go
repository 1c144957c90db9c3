package cp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/sqlite"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// These tests run the control plane on a real SQLite store without agents; the paths that
// need a running sandbox are covered by the end-to-end suite (e2e/platform.test.mjs).

var testKey = "e2b_" + strings.Repeat("0f", 20)

const testAgentToken = "test-agent-token"

func newTestCP(t *testing.T) (*Server, *httptest.Server, store.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := RegisterKey(context.Background(), st, testKey, "test", store.DefaultTeam); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	hs := httptest.NewServer(s.APIHandler())
	t.Cleanup(hs.Close)
	return s, hs, st
}

func call(t *testing.T, method, url, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

func TestAuthAndErrors(t *testing.T) {
	_, hs, st := newTestCP(t)
	key := map[string]string{"X-API-Key": testKey}
	// A sandbox of the key's team, for the checks of a request's body.
	if err := st.CreateSandbox(context.Background(), store.Sandbox{ID: "mine", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		msg                      string
	}{
		{"no key", "GET", "/v2/sandboxes", "", nil, 401, "missing API key"},
		{"wrong key", "GET", "/v2/sandboxes", "", map[string]string{"X-API-Key": "e2b_" + strings.Repeat("1", 40)}, 401, "invalid API key"},
		{"list", "GET", "/v2/sandboxes", "", key, 200, `"sandboxID":"mine"`},
		{"unknown sandbox", "GET", "/sandboxes/nosuch", "", key, 404, "sandbox nosuch not found"},
		{"kill unknown", "DELETE", "/sandboxes/nosuch", "", key, 404, "not found"},
		{"pause unknown", "POST", "/sandboxes/nosuch/pause", "", key, 404, "not found"},
		{"bad json", "POST", "/sandboxes", `{"templateID":`, key, 400, "invalid JSON"},
		{"no template", "POST", "/sandboxes", `{}`, key, 400, "templateID is required"},
		{"unknown template", "POST", "/v2/sandboxes", `{"templateID":"nope"}`, key, 404, "not found: build it on an agent"},
		{"negative timeout", "POST", "/sandboxes", `{"templateID":"base","timeout":-1}`, key, 400, "timeout"},
		{"bad state filter", "GET", "/v2/sandboxes?state=sleeping", "", key, 400, "state"},
		{"bad limit", "GET", "/v2/sandboxes?limit=1000", "", key, 400, "limit"},
		{"bad cursor", "GET", "/v2/sandboxes?nextToken=garbage", "", key, 400, "nextToken"},
		{"bad startedAfter", "GET", "/v2/sandboxes?startedAfter=yesterday", "", key, 400, "startedAfter must be an RFC 3339 time"},
		{"unknown route", "GET", "/nope", "", key, 404, "no route"},
		// Network options are checked before anything is placed; a domain name, IPv6 or an
		// option Hearth lacks is refused, never silently ignored.
		{"domain in denyOut", "POST", "/v2/sandboxes", `{"templateID":"base","network":{"denyOut":["api.openai.com"]}}`, key, 400, `network.denyOut: \"api.openai.com\" is a domain name: domain names are allowed in allowOut only`},
		{"bad domain in allowOut", "POST", "/v2/sandboxes", `{"templateID":"base","network":{"allowOut":["a.*.com"],"denyOut":["0.0.0.0/0"]}}`, key, 400, `network.allowOut: domain pattern \"a.*.com\": label \"*\" has character`},
		{"domain in allowOut is fine", "POST", "/v2/sandboxes", `{"templateID":"nope","network":{"allowOut":["api.openai.com","*.github.com"],"denyOut":["0.0.0.0/0"]}}`, key, 404, `template \"nope\" not found`},
		{"IPv6 in denyOut", "POST", "/v2/sandboxes", `{"templateID":"base","network":{"denyOut":["::/0"]}}`, key, 400, `network.denyOut: \"::/0\" is IPv6`},
		{"garbage in denyOut", "POST", "/v2/sandboxes", `{"templateID":"base","network":{"denyOut":["1.2.3.4/40"]}}`, key, 400, "not an IPv4 CIDR range"},
		{"egress proxy", "POST", "/v2/sandboxes", `{"templateID":"base","network":{"egressProxy":{"address":"p:1080"}}}`, key, 400, "network.egressProxy: not supported"},
		{"volume mounts", "POST", "/v2/sandboxes", `{"templateID":"base","volumeMounts":[{"name":"v","path":"/data"}]}`, key, 400, "volumeMounts: not supported"},
		{"empty extras are fine", "POST", "/v2/sandboxes", `{"templateID":"nope","volumeMounts":[],"network":{"rules":{},"allowOut":[]}}`, key, 404, `template \"nope\" not found`},
		{"network of unknown sandbox", "PUT", "/sandboxes/nosuch/network", `{"denyOut":["0.0.0.0/0"]}`, key, 404, "sandbox nosuch not found"},
		{"network update checked", "PUT", "/sandboxes/mine/network", `{"denyOut":["example.com"]}`, key, 400, "is a domain name"},
		{"fork unknown", "POST", "/sandboxes/nosuch/fork", `{"count":1}`, key, 404, "sandbox nosuch not found"},
		{"fork count too high", "POST", "/sandboxes/mine/fork", `{"count":101}`, key, 400, "count must be 1 to 100"},
		{"fork count zero", "POST", "/sandboxes/mine/fork", `{"count":0}`, key, 400, "count must be 1 to 100"},
		{"network update without rules", "PUT", "/sandboxes/mine/network", `{"rules":{"a.com":[{}]}}`, key, 400, "rules: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := call(t, tt.method, hs.URL+tt.path, tt.body, tt.hdr)
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
}

// heartbeat sends one heartbeat with hdr, or with the agent token when hdr is nil.
func heartbeat(t *testing.T, url, id string, mem, committed int64, hdr map[string]string) int {
	if hdr == nil {
		hdr = map[string]string{"Authorization": "Bearer " + testAgentToken}
	}
	hb := hostreg.Heartbeat{RPCAddr: "127.0.0.1:1", ProxyAddr: "127.0.0.1:2", Runtime: "gvisor", CPUs: 2,
		MemoryTotalMiB: mem, MemoryCommittedMiB: committed, Templates: []hostreg.Template{{Name: "base", Version: "v1", EnvdVersion: "0.6.4"}}}
	b, _ := json.Marshal(hb)
	status, _, _ := call(t, "POST", url+hostreg.Path(id), string(b), hdr)
	return status
}

// TestPendingEndsWithAnyReplicasHeartbeat: what a replica placed counts against a host until
// the host's next heartbeat, even when that heartbeat went to another replica (agents send
// theirs to one). Before, only a heartbeat this replica received cleared it, so a replica
// the agents did not talk to kept adding every sandbox it ever placed to the hosts' own
// figures and soon found them all full.
func TestPendingEndsWithAnyReplicasHeartbeat(t *testing.T) {
	_, hs, st := newTestCP(t)
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	ctx := context.Background()
	heartbeat(t, hs.URL, "a", 4096, 0, nil) // room for 8192 MiB (2x overcommit)
	heartbeat(t, hs.URL, "b", 4096, 0, nil)
	d := demand{memMiB: 3000, cpus: 1}
	for i, want := range []string{"a", "b", "a", "b"} {
		h, err := s2.place(ctx, d)
		if err != nil || h.ID != want {
			t.Fatalf("placement %d through replica 2: %v, %v; want %s", i, h.ID, err, want)
		}
		s2.addPending(h.ID, d)
	}
	if _, err := s2.place(ctx, d); err == nil {
		t.Fatal("a fifth 3000 MiB sandbox fit while four were in flight")
	}
	// The agents report them, to replica 1 (one on b has been killed meanwhile).
	time.Sleep(5 * time.Millisecond) // past the store's millisecond resolution
	for id, committed := range map[string]int64{"a": 6000, "b": 3000} {
		h, _ := st.Host(ctx, id)
		h.MemoryCommittedMiB, h.LastHeartbeat = committed, time.Now().UTC()
		if err := st.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := s2.place(ctx, d); err != nil || h.ID != "b" {
		t.Fatalf("placement after the agents reported in elsewhere: %v, %v; want b", h.ID, err)
	}
}

func TestHeartbeatRegistersHostsAndTemplates(t *testing.T) {
	_, hs, st := newTestCP(t)
	if got := heartbeat(t, hs.URL, "h1", 4096, 0, nil); got != http.StatusOK {
		t.Fatalf("first heartbeat: %d, want 200 (registered)", got)
	}
	h, err := st.Host(context.Background(), "h1")
	if err != nil || h.State != store.HostReady || h.ProxyAddr != "127.0.0.1:2" {
		t.Fatalf("host after heartbeat: %+v, %v", h, err)
	}
	status, body, _ := call(t, "GET", hs.URL+"/templates", "", map[string]string{"X-API-Key": testKey})
	if status != 200 || !strings.Contains(body, `"templateID":"base"`) || !strings.Contains(body, `"buildStatus":"ready"`) {
		t.Fatalf("templates after heartbeat: %d %s", status, body)
	}

}

func TestPlacement(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	if _, err := s.place(ctx, demand{memMiB: 512, cpus: 1}); err == nil {
		t.Fatal("placed a sandbox with no agents registered")
	}
	heartbeat(t, hs.URL, "busy", 4096, 6000, nil) // 6000 of 8192 (2x overcommit)
	heartbeat(t, hs.URL, "idle", 4096, 1000, nil)
	heartbeat(t, hs.URL, "full", 1024, 2048, nil)
	h, err := s.place(ctx, demand{memMiB: 512, cpus: 1})
	if err != nil || h.ID != "idle" {
		t.Fatalf("place = %v, %v; want the least loaded host", h.ID, err)
	}
	// Pending creates count until the next heartbeat, so a burst spreads out.
	s.addPending("idle", demand{memMiB: 5500})
	if h, err := s.place(ctx, demand{memMiB: 512, cpus: 1}); err != nil || h.ID != "busy" {
		t.Fatalf("place after pending = %v, %v; want busy", h.ID, err)
	}
	// A host that stops sending heartbeats is marked down and not used.
	for _, id := range []string{"busy", "idle"} {
		hh, _ := st.Host(ctx, id)
		hh.LastHeartbeat = time.Now().Add(-2 * time.Minute)
		st.PutHost(ctx, hh)
	}
	s.checkHosts(ctx)
	if hh, _ := st.Host(ctx, "idle"); hh.State != store.HostDown {
		t.Fatalf("stale host state = %q, want down", hh.State)
	}
	if _, err := s.place(ctx, demand{memMiB: 512, cpus: 1}); err == nil {
		t.Fatal("placed on a down or full host")
	}
}

func TestListFilterAndPaging(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).UTC()
	for i := range 5 {
		state := store.StateRunning
		if i%2 == 1 {
			state = store.StatePaused
		}
		err := st.CreateSandbox(ctx, store.Sandbox{
			ID: fmt.Sprintf("sbx%02d", i), TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: state, CPUs: 1, MemoryMiB: 256,
			StartedAt: base.Add(time.Duration(i) * time.Minute), EndAt: base.Add(2 * time.Hour),
			Metadata: map[string]string{"team": map[bool]string{true: "a", false: "b"}[i < 3], "odd&key": "v=1"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	key := map[string]string{"X-API-Key": testKey}
	list := func(q string) ([]api.ListedSandbox, string) {
		status, body, hdr := call(t, "GET", hs.URL+"/v2/sandboxes?"+q, "", key)
		if status != 200 {
			t.Fatalf("list %s: %d %s", q, status, body)
		}
		var out []api.ListedSandbox
		json.Unmarshal([]byte(body), &out)
		return out, hdr.Get("X-Next-Token")
	}
	ids := func(l []api.ListedSandbox) string {
		var s []string
		for _, x := range l {
			s = append(s, x.SandboxID)
		}
		return strings.Join(s, ",")
	}
	// Encoded as the JS SDK does: each key and value percent-encoded, then form-encoded.
	encodeURIComponent := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	md := url.QueryEscape(url.Values{"team": {"a"}, encodeURIComponent("odd&key"): {encodeURIComponent("v=1")}}.Encode())
	if got, _ := list("metadata=" + md); ids(got) != "sbx02,sbx01,sbx00" {
		t.Errorf("metadata filter: %s", ids(got))
	}
	if got, _ := list("state=paused"); ids(got) != "sbx03,sbx01" || got[0].State != "paused" {
		t.Errorf("state filter: %s", ids(got))
	}
	// startedAfter is inclusive, to the millisecond the SDK sends (Date.toISOString()).
	at := func(d time.Duration) string {
		return url.QueryEscape(base.Add(d).Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z07:00"))
	}
	if got, _ := list("startedAfter=" + at(2*time.Minute)); ids(got) != "sbx04,sbx03,sbx02" {
		t.Errorf("startedAfter the start of sbx02: %s", ids(got))
	}
	if got, _ := list("startedAfter=" + at(2*time.Minute+time.Second)); ids(got) != "sbx04,sbx03" {
		t.Errorf("startedAfter a second after the start of sbx02: %s", ids(got))
	}
	page1, next := list("limit=2&order=asc")
	page2, next2 := list("limit=2&order=asc&nextToken=" + url.QueryEscape(next))
	page3, next3 := list("limit=2&order=asc&nextToken=" + url.QueryEscape(next2))
	if ids(page1)+"|"+ids(page2)+"|"+ids(page3) != "sbx00,sbx01|sbx02,sbx03|sbx04" || next3 != "" {
		t.Errorf("paging: %s | %s | %s (last token %q)", ids(page1), ids(page2), ids(page3), next3)
	}
	// The deprecated list returns running sandboxes only.
	status, body, _ := call(t, "GET", hs.URL+"/sandboxes", "", key)
	var running []api.ListedSandbox
	json.Unmarshal([]byte(body), &running)
	if status != 200 || ids(running) != "sbx04,sbx02,sbx00" {
		t.Errorf("GET /sandboxes: %d %s", status, ids(running))
	}
}

func TestTimeoutAndRefresh(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	end := time.Now().Add(time.Minute).UTC()
	st.CreateSandbox(ctx, store.Sandbox{ID: "t1", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning, StartedAt: time.Now().UTC(), EndAt: end})
	key := map[string]string{"X-API-Key": testKey}
	if status, body, _ := call(t, "POST", hs.URL+"/sandboxes/t1/timeout", `{"timeout":3600}`, key); status != 204 {
		t.Fatalf("timeout: %d %s", status, body)
	}
	sb, _ := st.Sandbox(ctx, "t1")
	if d := time.Until(sb.EndAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("deadline after timeout=3600: in %v", d)
	}
	// A refresh never shortens the deadline.
	call(t, "POST", hs.URL+"/sandboxes/t1/refreshes", `{"duration":10}`, key)
	if sb2, _ := st.Sandbox(ctx, "t1"); !sb2.EndAt.Equal(sb.EndAt) {
		t.Fatalf("refresh shortened the deadline: %v -> %v", sb.EndAt, sb2.EndAt)
	}
	if status, _, _ := call(t, "POST", hs.URL+"/sandboxes/t1/timeout", `{}`, key); status != 400 {
		t.Fatalf("timeout without a value: %d, want 400", status)
	}
	if status, _, _ := call(t, "POST", hs.URL+"/sandboxes/t1/refreshes", `{"duration":7200}`, key); status != 400 {
		t.Fatalf("refresh beyond an hour: %d, want 400", status)
	}
}

// A route is reused without the store, and dropped when the sandbox changes state here.
func TestRouteCache(t *testing.T) {
	s, _, _ := newTestCP(t)
	sb := store.Sandbox{ID: "r1", State: store.StateRunning}
	s.routes.put(cachedRoute{sb: sb, addr: "127.0.0.1:1", at: time.Now()})
	if c, ok := s.routes.get("r1"); !ok || c.addr != "127.0.0.1:1" {
		t.Fatalf("fresh route not cached: %+v %v", c, ok)
	}
	s.forgetRoute("r1")
	if _, ok := s.routes.get("r1"); ok {
		t.Fatal("route still cached after forgetRoute")
	}
	s.routes.put(cachedRoute{sb: sb, addr: "127.0.0.1:1", at: time.Now().Add(-2 * routeTTL)})
	if _, ok := s.routes.get("r1"); ok {
		t.Fatal("expired route served from the cache")
	}
}

// A route in use is looked up again before it expires, in the background: a sandbox still
// running keeps its entry (so requests never wait for the store), one that another replica
// paused meanwhile is forgotten and the next request gets the paused answer, and a lookup
// that began before a drop does not put its answer back.
func TestRouteRefreshAhead(t *testing.T) {
	s, _, st := newTestCP(t)
	ctx := context.Background()
	if err := st.PutHost(ctx, store.Host{ID: "h", State: store.HostReady, ProxyAddr: "127.0.0.1:2", RPCAddr: "127.0.0.1:3", LastHeartbeat: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"live", "gone"} {
		if err := st.CreateSandbox(ctx, store.Sandbox{ID: id, TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning,
			AllowPublicTraffic: true, StartedAt: time.Now().UTC(), EndAt: time.Now().Add(time.Hour).UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	req := httptest.NewRequest("GET", "http://x/", nil)
	resolve := func(id string) (cachedRoute, error) {
		return s.resolveRoute(req, proxy.Route{SandboxID: id, Port: 8000})
	}
	waitIdle := func(id string) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			s.routes.mu.Lock()
			busy := s.routes.refreshing[id]
			s.routes.mu.Unlock()
			if !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("refresh of %s did not end", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	old := time.Now().Add(-routeRefreshAfter - 100*time.Millisecond)
	for _, id := range []string{"live", "gone"} {
		sb, _ := st.Sandbox(ctx, id)
		s.routes.put(cachedRoute{sb: sb, addr: "127.0.0.1:9", at: old})
	}
	// Another replica pauses "gone"; this one still has its route.
	if _, err := st.UpdateSandbox(ctx, "gone", func(sb *store.Sandbox) error { sb.State = store.StatePaused; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"live", "gone"} {
		if c, err := resolve(id); err != nil || c.addr != "127.0.0.1:9" {
			t.Fatalf("%s: an entry younger than routeTTL was not served from the cache: %+v %v", id, c, err)
		}
		waitIdle(id)
	}
	c, ok := s.routes.get("live")
	if !ok || c.addr != "127.0.0.1:2" || time.Since(c.at) > routeRefreshAfter {
		t.Fatalf("live: entry not refreshed from the store: %+v %v", c, ok)
	}
	if _, ok := s.routes.get("gone"); ok {
		t.Fatal("gone: the route of a sandbox paused elsewhere stayed cached after its refresh")
	}
	if _, err := resolve("gone"); !proxy.IsNotFound(err) {
		t.Fatalf("gone: after the refresh, want the paused sandbox's 502, got %v", err)
	}
	// A lookup that began before a drop does not cache what it read.
	_, _, _, epoch := s.routes.lookup("live")
	s.forgetRoute("live")
	s.routes.putIf(c, epoch)
	if _, ok := s.routes.get("live"); ok {
		t.Fatal("a lookup from before forgetRoute put its route back")
	}
}

// TestProxyUsesLocalAgentSocket: sandboxes on a host whose agent proxy also listens on a
// local Unix socket (hearth dev) are proxied through the socket; others through the agent's
// address.
func TestProxyUsesLocalAgentSocket(t *testing.T) {
	agentOn := func(network, addr, name string) string {
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s:%s", name, r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port"))
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	sock := agentOn("unix", filepath.Join(t.TempDir(), "agent-proxy.sock"), "socket")
	remote := agentOn("tcp", "127.0.0.1:0", "tcp")

	s, _, _ := newTestCP(t)
	s.cfg.LocalProxySockets = map[string]string{"local": sock}
	// The local agent's TCP address answers nothing: only the socket can serve it.
	s.routes.put(cachedRoute{sb: store.Sandbox{ID: "near", State: store.StateRunning, HostID: "local", AllowPublicTraffic: true}, addr: "127.0.0.1:1", at: time.Now()})
	s.routes.put(cachedRoute{sb: store.Sandbox{ID: "far", State: store.StateRunning, HostID: "other", AllowPublicTraffic: true}, addr: remote, at: time.Now()})
	ps := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(ps.Close)

	for _, c := range []struct{ id, want string }{{"near", "socket near:8080"}, {"far", "tcp far:8080"}} {
		_, body, _ := call(t, "GET", ps.URL+"/", "", map[string]string{"E2b-Sandbox-Id": c.id, "E2b-Sandbox-Port": "8080"})
		if body != c.want {
			t.Errorf("sandbox %s: answered %q, want %q", c.id, body, c.want)
		}
	}
}

// TestTrafficToken: the ports of a sandbox created with allowPublicTraffic false need its
// traffic token; public sandboxes' ports and envd's port (which has its own token) do not.
func TestTrafficToken(t *testing.T) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "reached %s:%s", r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port"))
	}))
	t.Cleanup(agent.Close)
	s, _, _ := newTestCP(t)
	addr := strings.TrimPrefix(agent.URL, "http://")
	s.routes.put(cachedRoute{sb: store.Sandbox{ID: "private", State: store.StateRunning, TrafficAccessToken: "tok"}, addr: addr, at: time.Now()})
	s.routes.put(cachedRoute{sb: store.Sandbox{ID: "public", State: store.StateRunning, TrafficAccessToken: "tok", AllowPublicTraffic: true}, addr: addr, at: time.Now()})
	ps := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(ps.Close)

	tests := []struct {
		id, port, token string
		status          int
	}{
		{"private", "8080", "", http.StatusForbidden},
		{"private", "8080", "wrong", http.StatusForbidden},
		{"private", "8080", "tok", http.StatusOK},
		{"private", "49983", "", http.StatusOK},
		{"public", "8080", "", http.StatusOK},
	}
	for _, tt := range tests {
		hdr := map[string]string{"E2b-Sandbox-Id": tt.id, "E2b-Sandbox-Port": tt.port}
		if tt.token != "" {
			hdr["E2b-Traffic-Access-Token"] = tt.token
		}
		status, body, _ := call(t, "GET", ps.URL+"/", "", hdr)
		if status != tt.status {
			t.Errorf("%s port %s token %q: %d %s, want %d", tt.id, tt.port, tt.token, status, body, tt.status)
		}
	}
}

// TestEgressOf: what the agent is told to enforce for what the user asked.
func TestEgressOf(t *testing.T) {
	tests := []struct {
		name string
		sb   store.Sandbox
		want string // allow|deny|domains, "" = no policy
	}{
		{"nothing", store.Sandbox{AllowInternet: true}, ""},
		{"no internet", store.Sandbox{}, "|0.0.0.0/0|"},
		{"no internet, denyOut all too", store.Sandbox{DenyOut: []string{"0.0.0.0/0"}}, "|0.0.0.0/0|"},
		{"deny one", store.Sandbox{AllowInternet: true, DenyOut: []string{"1.2.3.4/32"}}, "|1.2.3.4/32|"},
		{"allow through deny", store.Sandbox{AllowInternet: true, AllowOut: []string{"1.1.1.1/32"}, DenyOut: []string{"0.0.0.0/0"}}, "1.1.1.1/32|0.0.0.0/0|"},
		// Domains bring the name server with them, or nothing could be resolved.
		{"domains", store.Sandbox{AllowOut: []string{"api.openai.com", "1.1.1.1/32", "*.github.com"}},
			"1.1.1.1/32,8.8.8.8/32|0.0.0.0/0|api.openai.com,*.github.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := egressOf(tt.sb)
			got := ""
			if e != nil {
				got = strings.Join(e.Allow, ",") + "|" + strings.Join(e.Deny, ",") + "|" + strings.Join(e.AllowDomains, ",")
			}
			if got != tt.want {
				t.Errorf("egressOf = %q, want %q", got, tt.want)
			}
		})
	}
}
