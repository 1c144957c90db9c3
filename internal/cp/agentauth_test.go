package cp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/store"
)

// register sends a first heartbeat for id and returns the host token it was issued.
func register(t *testing.T, url, id string) string {
	t.Helper()
	b, _ := json.Marshal(hostreg.Heartbeat{RPCAddr: "10.0.0.1:5008", ProxyAddr: "10.0.0.1:5007", Runtime: "gvisor"})
	status, body, _ := call(t, "POST", url+hostreg.Path(id), string(b), map[string]string{"Authorization": "Bearer " + testAgentToken})
	var reg hostreg.Answer
	if status != http.StatusOK || json.Unmarshal([]byte(body), &reg) != nil || reg.HostToken == "" {
		t.Fatalf("register %s: %d %s", id, status, body)
	}
	return reg.HostToken
}

// TestHeartbeatCredentials: once a host ID is registered, only a heartbeat with the shared
// agent token and that host's own token is accepted; every other one is refused and leaves
// the host (its addresses: where its traffic goes) as it was.
func TestHeartbeatCredentials(t *testing.T) {
	_, hs, st := newTestCP(t)
	tok1 := register(t, hs.URL, "h1")
	tok2 := register(t, hs.URL, "h2")
	if tok1 == tok2 {
		t.Fatal("two hosts were issued one token")
	}
	if h, _ := st.Host(context.Background(), "h1"); h.TokenHash == "" || strings.Contains(h.TokenHash, tok1) {
		t.Fatalf("stored token hash %q: want the hash, not the token", h.TokenHash)
	}
	shared := "Bearer " + testAgentToken
	tests := []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"no credential", map[string]string{}, http.StatusUnauthorized},
		{"wrong shared token", map[string]string{"Authorization": "Bearer nope", hostreg.HostTokenHeader: tok1}, http.StatusUnauthorized},
		{"shared token only", map[string]string{"Authorization": shared}, http.StatusUnauthorized},
		{"another host's token", map[string]string{"Authorization": shared, hostreg.HostTokenHeader: tok2}, http.StatusUnauthorized},
		{"wrong host token", map[string]string{"Authorization": shared, hostreg.HostTokenHeader: tok1 + "x"}, http.StatusUnauthorized},
		{"host token without the shared one", map[string]string{hostreg.HostTokenHeader: tok1}, http.StatusUnauthorized},
		{"valid", map[string]string{"Authorization": shared, hostreg.HostTokenHeader: tok1}, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(hostreg.Heartbeat{RPCAddr: "10.6.6.6:5008", ProxyAddr: "10.6.6.6:5007", Runtime: "gvisor"})
			status, body, _ := call(t, "POST", hs.URL+hostreg.Path("h1"), string(b), tt.hdr)
			if status != tt.status {
				t.Fatalf("%d %s, want %d", status, body, tt.status)
			}
			h, _ := st.Host(context.Background(), "h1")
			moved := h.RPCAddr == "10.6.6.6:5008"
			if moved != (tt.status == http.StatusNoContent) {
				t.Fatalf("host after a %d heartbeat: %+v", status, h)
			}
			if !hostreg.TokenMatches(h.TokenHash, tok1) {
				t.Fatal("the heartbeat changed the host's token")
			}
		})
	}
}

// TestHeartbeatProof: the control plane proves it holds the agent token, and only to a
// caller that presented it.
func TestHeartbeatProof(t *testing.T) {
	_, hs, _ := newTestCP(t)
	b, _ := json.Marshal(hostreg.Heartbeat{RPCAddr: "10.0.0.1:5008", ProxyAddr: "10.0.0.1:5007"})
	_, _, h := call(t, "POST", hs.URL+hostreg.Path("h1"), string(b), map[string]string{"Authorization": "Bearer " + testAgentToken, hostreg.NonceHeader: "n1"})
	if got, want := h.Get(hostreg.ProofHeader), hostreg.Proof(testAgentToken, "h1", "n1"); got != want {
		t.Fatalf("proof %q, want %q", got, want)
	}
	_, _, h = call(t, "POST", hs.URL+hostreg.Path("h9"), string(b), map[string]string{"Authorization": "Bearer nope", hostreg.NonceHeader: "n1"})
	if h.Get(hostreg.ProofHeader) != "" {
		t.Fatal("a caller without the agent token got a proof")
	}
}

// TestHeartbeatRejectsBadInput: host IDs and advertised addresses are checked.
func TestHeartbeatRejectsBadInput(t *testing.T) {
	_, hs, _ := newTestCP(t)
	auth := map[string]string{"Authorization": "Bearer " + testAgentToken}
	for _, c := range []struct{ id, rpc string }{{"a b", "10.0.0.1:1"}, {"-x", "10.0.0.1:1"}, {strings.Repeat("a", 129), "10.0.0.1:1"}, {"ok", "10.0.0.1"}} {
		b, _ := json.Marshal(hostreg.Heartbeat{RPCAddr: c.rpc, ProxyAddr: "10.0.0.1:2"})
		if status, body, _ := call(t, "POST", hs.URL+hostreg.Path(c.id), string(b), auth); status != http.StatusBadRequest {
			t.Errorf("host %q rpc %q: %d %s, want 400", c.id, c.rpc, status, body)
		}
	}
}

// TestSenderRegistersOnce: the agent's sender keeps the issued token (mode 0600) and uses it;
// an agent without it cannot heartbeat as the same ID; an answer without a valid proof is
// refused and no token from it is kept.
func TestSenderRegistersOnce(t *testing.T) {
	_, hs, st := newTestCP(t)
	hb := func(ctx context.Context) (hostreg.Heartbeat, error) {
		return hostreg.Heartbeat{RPCAddr: "10.0.0.1:5008", ProxyAddr: "10.0.0.1:5007"}, nil
	}
	dir := t.TempDir()
	snd := &hostreg.Sender{ControlPlane: hs.URL, Token: testAgentToken, HostID: "h1", TokenFile: filepath.Join(dir, "host-token"),
		Build: hb, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := snd.Send(ctx); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	fi, err := os.Stat(snd.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host token file: %v, %v", fi, err)
	}
	saved, _ := os.ReadFile(snd.TokenFile)
	if h, _ := st.Host(ctx, "h1"); !hostreg.TokenMatches(h.TokenHash, strings.TrimSpace(string(saved))) {
		t.Fatal("the saved token is not the registered one")
	}
	// A restart reads the file.
	again := *snd
	if err := (&again).Send(ctx); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	thief := &hostreg.Sender{ControlPlane: hs.URL, Token: testAgentToken, HostID: "h1", TokenFile: filepath.Join(t.TempDir(), "host-token"),
		Build: hb, Log: slog.New(slog.DiscardHandler)}
	if err := thief.Send(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("second agent as h1: %v, want a 401", err)
	}

	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(hostreg.ProofHeader, "forged")
		writeJSON(w, http.StatusOK, hostreg.Answer{HostToken: "planted"})
	}))
	t.Cleanup(fake.Close)
	victim := &hostreg.Sender{ControlPlane: fake.URL, Token: testAgentToken, HostID: "h2", TokenFile: filepath.Join(t.TempDir(), "host-token"),
		Build: hb, Log: slog.New(slog.DiscardHandler)}
	if err := victim.Send(ctx); err == nil || !strings.Contains(err.Error(), "prove") {
		t.Fatalf("answer without proof: %v", err)
	}
	if _, err := os.Stat(victim.TokenFile); err == nil {
		t.Fatal("a token from an unproven answer was saved")
	}
}

// TestSenderFailsOverBetweenReplicas: an agent given two replicas' URLs heartbeats to the one
// that answers, whichever is down, and keeps to it; both replicas accept its host token.
func TestSenderFailsOverBetweenReplicas(t *testing.T) {
	s1, _, st := newTestCP(t)
	s2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	var hits [2]atomic.Int64
	count := func(i int, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits[i].Add(1); h.ServeHTTP(w, r) })
	}
	hs1, hs2 := httptest.NewServer(count(0, s1.APIHandler())), httptest.NewServer(count(1, s2.APIHandler()))
	t.Cleanup(hs1.Close)
	t.Cleanup(hs2.Close)
	beats := 0
	snd := &hostreg.Sender{ControlPlane: hs1.URL + "/, " + hs2.URL, Token: testAgentToken, HostID: "h1",
		TokenFile: filepath.Join(t.TempDir(), "host-token"), Log: slog.New(slog.DiscardHandler),
		Build: func(ctx context.Context) (hostreg.Heartbeat, error) {
			beats++
			return hostreg.Heartbeat{RPCAddr: "10.0.0.1:5008", ProxyAddr: "10.0.0.1:5007", SandboxesRunning: beats}, nil
		}}
	send := func(what string, want1, want2 int64) {
		t.Helper()
		hits[0].Store(0)
		hits[1].Store(0)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := snd.Send(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if h, _ := st.Host(ctx, "h1"); h.SandboxesRunning != beats {
			t.Fatalf("%s: the stored host has heartbeat %d, want %d", what, h.SandboxesRunning, beats)
		}
		if hits[0].Load() != want1 || hits[1].Load() != want2 {
			t.Fatalf("%s: replicas got %d and %d heartbeats, want %d and %d", what, hits[0].Load(), hits[1].Load(), want1, want2)
		}
	}
	send("both up", 1, 0)
	hs1.Close()
	send("replica 1 down", 0, 1)
	send("replica 1 still down: straight to replica 2", 0, 1)
	// The URL after the one that answered last refuses connections: the next one is tried.
	snd.ControlPlane = hs2.URL + ",http://127.0.0.1:1"
	send("a replica that refuses connections", 0, 1)
}

// TestAgentCallsCarryToken: the RPC client and the proxy hop to agents send the agent token;
// a copy a client sends through the public proxy is replaced.
func TestAgentCallsCarryToken(t *testing.T) {
	got := make(chan string, 1)
	rpc := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/proto")
	}))
	rpc.Config.Protocols = new(http.Protocols)
	rpc.Config.Protocols.SetUnencryptedHTTP2(true)
	rpc.Config.Protocols.SetHTTP1(true)
	rpc.Start()
	t.Cleanup(rpc.Close)
	s, _, _ := newTestCP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = s.agents.client(store.Host{RPCAddr: strings.TrimPrefix(rpc.URL, "http://")}).Stats(ctx, connect.NewRequest(&pb.StatsRequest{}))
	if a := <-got; a != "Bearer "+testAgentToken {
		t.Fatalf("RPC Authorization %q", a)
	}

	agentProxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Header.Get(hostreg.ProxyAuthHeader)))
	}))
	t.Cleanup(agentProxy.Close)
	s.routes.put(cachedRoute{sb: store.Sandbox{ID: "sb", State: store.StateRunning, AllowPublicTraffic: true}, addr: strings.TrimPrefix(agentProxy.URL, "http://"), at: time.Now()})
	ps := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(ps.Close)
	_, body, _ := call(t, "GET", ps.URL+"/", "", map[string]string{"E2b-Sandbox-Id": "sb", "E2b-Sandbox-Port": "8080", hostreg.ProxyAuthHeader: "client-copy"})
	if body != testAgentToken {
		t.Fatalf("proxy hop carried %q, want the agent token", body)
	}
}
