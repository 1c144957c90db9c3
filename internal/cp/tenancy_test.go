package cp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// tenants is a control plane with two teams: the default one (testKey) and "other"
// (otherKey), a sandbox and a private template of the default team, and a public template.
func tenants(t *testing.T) (*Server, *httptest.Server, store.Store, string) {
	t.Helper()
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	otherKey := NewAPIKey()
	if err := RegisterKey(ctx, st, otherKey, "other's", "t-other"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := st.CreateSandbox(ctx, store.Sandbox{ID: "mine", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h",
		State: store.StateRunning, StartedAt: now, EndAt: now.Add(time.Hour), EnvdAccessToken: "secret-envd-token"}); err != nil {
		t.Fatal(err)
	}
	for _, tpl := range []store.Template{
		{ID: "base", TeamID: store.DefaultTeam, Aliases: []string{"base"}, Public: true, BuildStatus: "ready"},
		{ID: "private1", TeamID: store.DefaultTeam, Aliases: []string{"secret-tpl"}, BuildStatus: "ready"},
	} {
		if err := st.PutTemplate(ctx, tpl); err != nil {
			t.Fatal(err)
		}
	}
	return s, hs, st, otherKey
}

// TestTenancy: a key sees and touches only its team's sandboxes and templates; another
// team's answer the same 404 as ones that do not exist, and never show their tokens.
func TestTenancy(t *testing.T) {
	_, hs, _, otherKey := tenants(t)
	mine := map[string]string{"X-API-Key": testKey}
	other := map[string]string{"X-API-Key": otherKey}
	routes := []struct{ method, path, body string }{
		{"GET", "/sandboxes/mine", ""},
		{"DELETE", "/sandboxes/mine", ""},
		{"POST", "/sandboxes/mine/timeout", `{"timeout":60}`},
		{"POST", "/sandboxes/mine/refreshes", `{"duration":60}`},
		{"POST", "/sandboxes/mine/pause", ""},
		{"POST", "/sandboxes/mine/resume", `{}`},
		{"POST", "/sandboxes/mine/connect", `{"timeout":60}`},
		{"POST", "/v2/sandboxes/mine/connect", `{"timeout":60}`},
		{"PUT", "/sandboxes/mine/network", `{"denyOut":["0.0.0.0/0"]}`},
		{"POST", "/sandboxes/mine/fork", `{"count":1}`},
		{"GET", "/sandboxes/mine/metrics", ""},
		{"GET", "/sandboxes/mine/logs", ""},
		{"GET", "/v2/sandboxes/mine/logs", ""},
	}
	for _, rt := range routes {
		t.Run("other team "+rt.method+" "+rt.path, func(t *testing.T) {
			status, body, _ := call(t, rt.method, hs.URL+rt.path, rt.body, other)
			if status != 404 || body != `{"code":404,"message":"sandbox mine not found"}`+"\n" {
				t.Fatalf("= %d %s, want the 404 of a sandbox that does not exist", status, body)
			}
		})
	}
	// Its own team gets past the check (the GET answers in full, with the token).
	status, body, _ := call(t, "GET", hs.URL+"/sandboxes/mine", "", mine)
	if status != 200 || !strings.Contains(body, "secret-envd-token") {
		t.Fatalf("own team GET = %d %s", status, body)
	}
	// A sandbox that does not exist answers the other team exactly the same.
	_, want, _ := call(t, "GET", hs.URL+"/sandboxes/nosuch", "", other)
	_, got, _ := call(t, "GET", hs.URL+"/sandboxes/mine", "", other)
	if strings.ReplaceAll(want, "nosuch", "mine") != got {
		t.Fatalf("another team's sandbox %q differs from a missing one %q", got, want)
	}

	for _, tc := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		has, hasNot              string
	}{
		{"list v2", "GET", "/v2/sandboxes", "", other, 200, "[]", "mine"},
		{"list running", "GET", "/sandboxes", "", other, 200, "[]", "mine"},
		{"own list", "GET", "/v2/sandboxes", "", mine, 200, `"sandboxID":"mine"`, ""},
		{"templates", "GET", "/templates", "", other, 200, `"templateID":"base"`, "private1"},
		{"own templates", "GET", "/templates", "", mine, 200, "private1", ""},
		{"private template", "GET", "/templates/private1", "", other, 404, "not found", "ready"},
		{"private template by alias", "GET", "/templates/secret-tpl", "", other, 404, "not found", "ready"},
		{"create from private template", "POST", "/v2/sandboxes", `{"templateID":"secret-tpl"}`, other, 404, `template \"secret-tpl\" not found`, ""},
		{"hosts are the operator's", "GET", "/hearth/v1/hosts", "", other, 403, "operator", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := call(t, tc.method, hs.URL+tc.path, tc.body, tc.hdr)
			if status != tc.status || !strings.Contains(body, tc.has) || (tc.hasNot != "" && strings.Contains(body, tc.hasNot)) {
				t.Fatalf("%s %s = %d %s; want %d with %q and without %q", tc.method, tc.path, status, body, tc.status, tc.has, tc.hasNot)
			}
		})
	}
}

// TestKilledSandboxLogsStayTheTeams: the logs of a killed sandbox (no record left) are
// readable by its team only.
func TestKilledSandboxLogsStayTheTeams(t *testing.T) {
	s, hs, _, otherKey := tenants(t)
	s.events.own("gone", store.DefaultTeam)
	s.events.add("gone", "info", "killed by request")
	if status, body, _ := call(t, "GET", hs.URL+"/sandboxes/gone/logs", "", map[string]string{"X-API-Key": otherKey}); status != 404 {
		t.Fatalf("other team reads a killed sandbox's logs: %d %s", status, body)
	}
	if status, body, _ := call(t, "GET", hs.URL+"/sandboxes/gone/logs", "", map[string]string{"X-API-Key": testKey}); status != 200 || !strings.Contains(body, "killed by request") {
		t.Fatalf("own team's killed sandbox logs: %d %s", status, body)
	}
}

// TestAPIKeysAndRevocation: a key manages its own team's keys; a revoked key stops at
// once on the replica that revoked it and within the key cache lifetime on another.
func TestAPIKeysAndRevocation(t *testing.T) {
	_, hs, st, otherKey := tenants(t)
	replica2 := New(Config{Store: st, Log: slog.New(slog.DiscardHandler), HostDeadAfter: time.Minute, AgentToken: testAgentToken})
	hs2 := httptest.NewServer(replica2.APIHandler())
	t.Cleanup(hs2.Close)
	mine := map[string]string{"X-API-Key": testKey}

	status, body, _ := call(t, "POST", hs.URL+"/api-keys", `{"name":"ci"}`, mine)
	if status != 201 {
		t.Fatalf("create key = %d %s", status, body)
	}
	var created api.CreatedTeamAPIKey
	if err := json.Unmarshal([]byte(body), &created); err != nil || !ValidKey(created.Key) || created.ID == "" || created.Name != "ci" {
		t.Fatalf("created key %s: %+v %v", body, created, err)
	}
	newKey := map[string]string{"X-API-Key": created.Key}
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		has, hasNot              string
	}{
		{"new key works", "GET", "/v2/sandboxes", "", newKey, 200, "mine", ""},
		{"new key works on replica 2", "GET", "/v2/sandboxes", "", newKey, 200, "mine", ""},
		{"own team lists it, masked", "GET", "/api-keys", "", mine, 200, created.Mask, created.Key},
		{"other team does not see it", "GET", "/api-keys", "", map[string]string{"X-API-Key": otherKey}, 200, "[", created.ID},
		{"other team cannot revoke it", "DELETE", "/api-keys/" + created.ID, "", map[string]string{"X-API-Key": otherKey}, 404, "not found", ""},
		{"name required", "POST", "/api-keys", `{"name":"  "}`, mine, 400, "name is required", ""},
	} {
		url := hs.URL
		if strings.Contains(tc.name, "replica 2") {
			url = hs2.URL
		}
		status, body, _ := call(t, tc.method, url+tc.path, tc.body, tc.hdr)
		if status != tc.status || !strings.Contains(body, tc.has) || (tc.hasNot != "" && strings.Contains(body, tc.hasNot)) {
			t.Fatalf("%s: %s %s = %d %s; want %d with %q and without %q", tc.name, tc.method, tc.path, status, body, tc.status, tc.has, tc.hasNot)
		}
	}

	if status, body, _ := call(t, "DELETE", hs.URL+"/api-keys/"+created.ID, "", mine); status != 204 {
		t.Fatalf("revoke = %d %s", status, body)
	}
	if status, _, _ := call(t, "GET", hs.URL+"/v2/sandboxes", "", newKey); status != 401 {
		t.Fatalf("revoked key on the replica that revoked it = %d, want 401 at once", status)
	}
	// Replica 2 had it cached; it must refuse it within keyCacheTTL (polled with slack for a
	// loaded machine: this bounds correctness, it is not a performance target).
	deadline := time.Now().Add(keyCacheTTL + 10*time.Second)
	for {
		status, _, _ := call(t, "GET", hs2.URL+"/v2/sandboxes", "", newKey)
		if status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still works on replica 2 after %v: %d", keyCacheTTL+10*time.Second, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRegisterKeyKeepsItsTeam: a key registered again for another team is refused, not moved.
func TestRegisterKeyKeepsItsTeam(t *testing.T) {
	_, _, st, otherKey := tenants(t)
	if err := RegisterKey(context.Background(), st, otherKey, "again", "t-other"); err != nil {
		t.Fatalf("registering a key again in its team: %v", err)
	}
	err := RegisterKey(context.Background(), st, otherKey, "moved", store.DefaultTeam)
	if err == nil || !strings.Contains(err.Error(), "belongs to team t-other") {
		t.Fatalf("registering another team's key: %v", err)
	}
}

// TestSnapshotsStayTheTeams: another team's snapshot is not listed, cannot be deleted and
// cannot be created from; the snapshot route of another team's sandbox is a 404.
func TestSnapshotsStayTheTeams(t *testing.T) {
	_, hs, st, otherKey := tenants(t)
	if _, err := st.CreateSnapshot(context.Background(), store.Snapshot{ID: "golden", Name: "golden", TeamID: store.DefaultTeam,
		SourceSandboxID: "mine", HostID: "h", TemplateID: "base", CPUs: 1, MemoryMiB: 512}); err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"X-API-Key": otherKey}
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		has, hasNot              string
	}{
		{"other team's list", "GET", "/snapshots", "", other, 200, "[]", "golden"},
		{"own list", "GET", "/snapshots", "", map[string]string{"X-API-Key": testKey}, 200, "golden", ""},
		{"delete", "DELETE", "/templates/golden:default", "", other, 404, "not found", ""},
		{"create from it", "POST", "/v2/sandboxes", `{"templateID":"golden:default"}`, other, 404, "not found", ""},
		{"snapshot another team's sandbox", "POST", "/sandboxes/mine/snapshots", `{}`, other, 404, "sandbox mine not found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := call(t, tc.method, hs.URL+tc.path, tc.body, tc.hdr)
			if status != tc.status || !strings.Contains(body, tc.has) || (tc.hasNot != "" && strings.Contains(body, tc.hasNot)) {
				t.Fatalf("%s %s = %d %s; want %d with %q and without %q", tc.method, tc.path, status, body, tc.status, tc.has, tc.hasNot)
			}
		})
	}
	if _, err := st.Snapshot(context.Background(), store.DefaultTeam, "golden"); err != nil {
		t.Fatalf("the other team's delete removed the snapshot: %v", err)
	}
}

// TestTemplateBuildsAreTheOperatorsForNow: API builds run their steps outside a sandbox, so
// only the operator's team may start them; another team's alias lookups see only what it may
// use.
func TestTemplateBuildsAreTheOperatorsForNow(t *testing.T) {
	_, hs, _, otherKey := tenants(t)
	other := map[string]string{"X-API-Key": otherKey}
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		has                      string
	}{
		{"request a build", "POST", "/v3/templates", `{"name":"mine2"}`, 403, "operator's team"},
		{"start a build", "POST", "/v2/templates/x/builds/00000000-0000-4000-8000-000000000000", `{}`, 403, "operator's team"},
		{"private alias", "GET", "/templates/aliases/secret-tpl", "", 404, "not found"},
		{"public alias", "GET", "/templates/aliases/base", "", 200, `"templateID":"base"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := call(t, tc.method, hs.URL+tc.path, tc.body, other)
			if status != tc.status || !strings.Contains(body, tc.has) {
				t.Fatalf("%s %s = %d %s; want %d with %q", tc.method, tc.path, status, body, tc.status, tc.has)
			}
		})
	}
}
