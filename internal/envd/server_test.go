package envd

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/identity"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

func newTestServer(t testing.TB) (*Server, *httptest.Server) {
	t.Helper()
	cur, err := identity.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{Log: slog.New(slog.DiscardHandler), DefaultUser: cur.Name})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	t.Cleanup(s.Close)
	return s, hs
}

func do(t *testing.T, method, u string, body string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestHealthAndMetrics(t *testing.T) {
	_, hs := newTestServer(t)
	if res := do(t, "GET", hs.URL+"/health", "", nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("/health = %d, want 204", res.StatusCode)
	}
	res := do(t, "GET", hs.URL+"/metrics", "", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics = %d", res.StatusCode)
	}
	var m map[string]float64
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "mem_total_mib", "mem_used_mib", "disk_used", "disk_total"} {
		if _, ok := m[k]; !ok {
			t.Errorf("/metrics lacks %q: %v", k, m)
		}
	}
	if m["mem_total"] <= 0 || m["mem_used"] <= 0 || m["mem_used"] > m["mem_total"] || m["disk_total"] <= 0 || m["cpu_count"] < 1 {
		t.Errorf("implausible metrics: %v", m)
	}
	if m["cpu_used_pct"] < 0 || m["cpu_used_pct"] > 100 {
		t.Errorf("cpu_used_pct = %v", m["cpu_used_pct"])
	}
}

func TestInit(t *testing.T) {
	s, hs := newTestServer(t)
	tests := []struct {
		name   string
		body   string
		status int
	}{
		{"empty body changes nothing", "", http.StatusNoContent},
		{"env vars and workdir", `{"envVars":{"A":"1","B":"two"},"defaultWorkdir":"/tmp"}`, http.StatusNoContent},
		{"malformed json", `{"envVars":`, http.StatusBadRequest},
		{"unknown default user", `{"defaultUser":"no-such-user-hearth"}`, http.StatusBadRequest},
		{"relative workdir", `{"defaultWorkdir":"tmp"}`, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, "POST", hs.URL+"/init", tt.body, nil)
			if res.StatusCode != tt.status {
				b, _ := io.ReadAll(res.Body)
				t.Fatalf("status %d (%s), want %d", res.StatusCode, b, tt.status)
			}
			if tt.status >= 400 {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if err := json.NewDecoder(res.Body).Decode(&e); err != nil || e.Code != tt.status || e.Message == "" {
					t.Fatalf("error body = %+v, %v", e, err)
				}
			}
		})
	}
	if s.Env().DefaultWorkdir() != "/tmp" || s.Env().Vars()["B"] != "two" {
		t.Fatalf("init not applied: workdir %q vars %v", s.Env().DefaultWorkdir(), s.Env().Vars())
	}
	res := do(t, "GET", hs.URL+"/envs", "", nil)
	var vars map[string]string
	if err := json.NewDecoder(res.Body).Decode(&vars); err != nil || vars["A"] != "1" {
		t.Fatalf("/envs = %v, %v", vars, err)
	}

	// /init env vars reach new processes, and the default workdir is their cwd.
	client := processconnect.NewProcessClient(http.DefaultClient, hs.URL)
	stream, err := client.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", "echo $A$B; pwd"}}}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for stream.Receive() {
		out.Write(stream.Msg().GetEvent().GetData().GetStdout())
	}
	if out.String() != "1two\n/tmp\n" {
		t.Fatalf("process saw %q", out.String())
	}
}

func TestAccessToken(t *testing.T) {
	s, hs := newTestServer(t)
	const token = "secret-token"
	if res := do(t, "POST", hs.URL+"/init", `{"accessToken":"`+token+`"}`, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("init = %d", res.StatusCode)
	}
	withToken := http.Header{auth.Header: {token}}
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	signed := func(path, op, user, exp string) string {
		e, _ := strconv.ParseInt(exp, 10, 64)
		q := url.Values{"path": {path}, "signature": {auth.Sign(path, op, user, token, e)}}
		if user != "" {
			q.Set("username", user)
		}
		if exp != "0" {
			q.Set("signature_expiration", exp)
		}
		return hs.URL + "/files?" + q.Encode()
	}
	tests := []struct {
		name   string
		method string
		url    string
		header http.Header
		status int
	}{
		{"health needs no token", "GET", hs.URL + "/health", nil, http.StatusNoContent},
		{"metrics without token", "GET", hs.URL + "/metrics", nil, http.StatusUnauthorized},
		{"metrics with wrong token", "GET", hs.URL + "/metrics", http.Header{auth.Header: {"nope"}}, http.StatusUnauthorized},
		{"metrics with token", "GET", hs.URL + "/metrics", withToken, http.StatusOK},
		{"init without token", "POST", hs.URL + "/init", nil, http.StatusUnauthorized},
		{"rpc without token", "POST", hs.URL + "/process.Process/List", nil, http.StatusUnauthorized},
		{"download without signature", "GET", hs.URL + "/files?path=/etc/hostname", nil, http.StatusUnauthorized},
		{"download signed", "GET", signed("/etc/hostname", auth.OpRead, "", "0"), nil, http.StatusOK},
		{"download signed with user and expiry", "GET", signed("/etc/hostname", auth.OpRead, s.Env().DefaultUser(), exp), nil, http.StatusOK},
		{"download signed for writing", "GET", signed("/etc/hostname", auth.OpWrite, "", "0"), nil, http.StatusUnauthorized},
		{"download signature expired", "GET", signed("/etc/hostname", auth.OpRead, "", past), nil, http.StatusUnauthorized},
		{"signature for another path", "GET", strings.Replace(signed("/etc/hostname", auth.OpRead, "", "0"), "hostname", "passwd", 1), nil, http.StatusUnauthorized},
		{"preflight passes", "OPTIONS", hs.URL + "/metrics", nil, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, tt.method, tt.url, "", tt.header)
			if res.StatusCode != tt.status {
				b, _ := io.ReadAll(res.Body)
				t.Fatalf("status %d (%s), want %d", res.StatusCode, b, tt.status)
			}
		})
	}
}

// TestAgentSecret: the first /init sets the agent's secret; from then on /init, /freeze and
// /thaw take only that secret (in any spelling of their paths), /init can replace it, and one
// envd's secret opens no other.
func TestAgentSecret(t *testing.T) {
	_, hs := newTestServer(t)
	_, other := newTestServer(t)
	a, b, c := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	with := func(secret string) http.Header { return http.Header{auth.AgentHeader: {secret}} }
	initBody := func(secret string) string { return `{"accessToken":"tok","hearthAgentSecret":"` + secret + `"}` }
	steps := []struct {
		name   string
		srv    string
		method string
		path   string
		body   string
		header http.Header
		status int
	}{
		{"freeze before any secret", hs.URL, "POST", "/freeze", "", nil, http.StatusNoContent},
		{"thaw before any secret", hs.URL, "POST", "/thaw", "", nil, http.StatusNoContent},
		{"too short a secret", hs.URL, "POST", "/init", `{"hearthAgentSecret":"short"}`, nil, http.StatusBadRequest},
		{"first init sets it", hs.URL, "POST", "/init", initBody(a), nil, http.StatusNoContent},
		{"freeze without it", hs.URL, "POST", "/freeze", "", nil, http.StatusUnauthorized},
		{"freeze with the access token only", hs.URL, "POST", "/freeze", "", http.Header{auth.Header: {"tok"}}, http.StatusUnauthorized},
		{"freeze with a wrong one", hs.URL, "POST", "/freeze", "", with(b), http.StatusUnauthorized},
		{"freeze encoded, without it", hs.URL, "POST", "/%66reeze", "", nil, http.StatusUnauthorized},
		{"thaw encoded, without it", hs.URL, "POST", "/%74haw", "", nil, http.StatusUnauthorized},
		{"freeze with it", hs.URL, "POST", "/freeze", "", with(a), http.StatusNoContent},
		{"thaw without it", hs.URL, "POST", "/thaw", "", nil, http.StatusUnauthorized},
		{"thaw with it", hs.URL, "POST", "/thaw", "", with(a), http.StatusNoContent},
		{"init without it", hs.URL, "POST", "/init", `{"accessToken":"mine"}`, nil, http.StatusUnauthorized},
		{"init encoded, without it", hs.URL, "POST", "/%69nit", `{"accessToken":"mine"}`, nil, http.StatusUnauthorized},
		{"init with the access token only", hs.URL, "POST", "/init", `{"accessToken":"mine"}`, http.Header{auth.Header: {"tok"}}, http.StatusUnauthorized},
		{"init with a wrong one setting another", hs.URL, "POST", "/init", initBody(c), with(b), http.StatusUnauthorized},
		{"init with it, replacing it", hs.URL, "POST", "/init", initBody(b), with(a), http.StatusNoContent},
		{"the replaced secret is refused", hs.URL, "POST", "/freeze", "", with(a), http.StatusUnauthorized},
		{"the new one works", hs.URL, "POST", "/thaw", "", with(b), http.StatusNoContent},
		{"another envd sets its own", other.URL, "POST", "/init", initBody(c), nil, http.StatusNoContent},
		{"one envd's secret opens no other", other.URL, "POST", "/freeze", "", with(b), http.StatusUnauthorized},
		{"nor the other way round", hs.URL, "POST", "/init", initBody(c), with(c), http.StatusUnauthorized},
		{"other routes still take the access token", hs.URL, "GET", "/envs", "", with(b), http.StatusUnauthorized},
	}
	for _, st := range steps {
		res := do(t, st.method, st.srv+st.path, st.body, st.header)
		if res.StatusCode != st.status {
			body, _ := io.ReadAll(res.Body)
			t.Errorf("%s: %s %s = %d %s, want %d", st.name, st.method, st.path, res.StatusCode, body, st.status)
		}
	}
}
