package cp

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/store"
)

// TestHeartbeatResolvesWarmPool: the answer to a heartbeat that asks about warm pool refs
// resolves each as a create of it would (the version a tag or the bare name points at, its
// artifact, its build's shape), says why for a ref with nothing to boot, follows a tag that
// moves, and a heartbeat that asks nothing is answered 204 as before.
func TestHeartbeatResolvesWarmPool(t *testing.T) {
	s, hs, st := newTestCP(t)
	ctx := context.Background()
	agent := &versionAgent{busy: map[string]bool{}}
	startBuildAgent(t, hs.URL, &buildAgent{}) // registers h1 (and base) ...
	startAgentServer(t, st, "h1", agent)      // ... and points h1 at this agent
	h1, err := st.Host(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}

	tplID, b1 := buildVersion(t, hs.URL, `{"name":"pooled","cpuCount":1,"memoryMB":1024}`)
	_, b2 := buildVersion(t, hs.URL, `{"name":"pooled:v2","cpuCount":4,"memoryMB":768}`)
	artifact := "sha256:" + strings.Repeat("d", 64)
	s.registerTemplate(ctx, hostreg.Template{Name: tplID + "-" + b2, Version: "v", EnvdVersion: "0.6.4", Artifact: artifact})
	// A template whose build has not finished: nothing to boot yet.
	if status, body, _ := call(t, "POST", hs.URL+"/v3/templates", `{"name":"unbuilt"}`, map[string]string{"X-API-Key": testKey}); status != http.StatusAccepted {
		t.Fatalf("request build of unbuilt: %d %s", status, body)
	}
	// Another team's private template: the pool is the host's, so it resolves as its owner's.
	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutTemplate(ctx, store.Template{ID: "theirs", TeamID: "t-other", Aliases: []string{"theirs"}, BuildID: "v1", BuildStatus: store.BuildReady,
		CPUs: 4, MemoryMiB: 2048, DiskMiB: 4096}); err != nil {
		t.Fatal(err)
	}

	// ask sends a heartbeat of host hp with refs, and returns the status and the answer.
	var token string
	ask := func(refs ...string) (int, hostreg.Answer) {
		t.Helper()
		hb := hostreg.Heartbeat{RPCAddr: h1.RPCAddr, ProxyAddr: h1.ProxyAddr, Runtime: "gvisor", CPUs: 2, MemoryTotalMiB: 8192, WarmPool: refs}
		b, _ := json.Marshal(hb)
		status, body, _ := call(t, "POST", hs.URL+hostreg.Path("hp"), string(b),
			map[string]string{"Authorization": "Bearer " + testAgentToken, hostreg.HostTokenHeader: token})
		var ans hostreg.Answer
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &ans); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
		} else if status != http.StatusNoContent {
			t.Fatalf("heartbeat: %d %s", status, body)
		}
		return status, ans
	}
	if _, ans := ask(); ans.HostToken == "" { // registers hp
		t.Fatal("no host token for a new host")
	} else {
		token = ans.HostToken
	}

	status, ans := ask("pooled", "pooled:v2", tplID+":v2", "pooled:nope", "nosuch", "unbuilt", "theirs", "base", "pooled:")
	if status != http.StatusOK || ans.HostToken != "" {
		t.Fatalf("heartbeat with refs: %d, host token %q", status, ans.HostToken)
	}
	for _, tc := range []struct {
		ref     string
		want    hostreg.WarmTarget
		wantErr string
	}{
		// The bare name is the default tag: the first build, with its own shape.
		{ref: "pooled", want: hostreg.WarmTarget{Template: tplID + "-" + b1, BuildID: b1, CPUs: 1, MemoryMiB: 1024}},
		// A tag names its build; the artifact its host uploaded comes along.
		{ref: "pooled:v2", want: hostreg.WarmTarget{Template: tplID + "-" + b2, BuildID: b2, Artifact: artifact, CPUs: 4, MemoryMiB: 768}},
		{ref: tplID + ":v2", want: hostreg.WarmTarget{Template: tplID + "-" + b2, BuildID: b2, Artifact: artifact, CPUs: 4, MemoryMiB: 768}},
		{ref: "pooled:nope", wantErr: `tag "nope" of template "pooled" not found`},
		{ref: "nosuch", wantErr: `template "nosuch" not found`},
		{ref: "unbuilt", wantErr: "has no ready build yet"},
		{ref: "theirs", want: hostreg.WarmTarget{Template: "theirs", CPUs: 4, MemoryMiB: 2048, DiskMiB: 4096}},
		// A template built on the agents, sized by the control plane's defaults.
		{ref: "base", want: hostreg.WarmTarget{Template: "base", CPUs: 2, MemoryMiB: 512}},
		{ref: "pooled:", wantErr: "Invalid tag: empty tag"},
	} {
		got, ok := ans.WarmPool[tc.ref]
		switch {
		case !ok:
			t.Errorf("%s: not in the answer %+v", tc.ref, ans.WarmPool)
		case tc.wantErr != "":
			if got.Template != "" || !strings.Contains(got.Error, tc.wantErr) {
				t.Errorf("%s: %+v, want error containing %q", tc.ref, got, tc.wantErr)
			}
		case got != tc.want:
			t.Errorf("%s: %+v, want %+v", tc.ref, got, tc.want)
		}
	}

	// Moving the default tag moves the bare name's answer.
	if status, body, _ := call(t, "POST", hs.URL+"/templates/tags", `{"target":"pooled:v2","tags":["default"]}`, map[string]string{"X-API-Key": testKey}); status != http.StatusCreated {
		t.Fatalf("move default: %d %s", status, body)
	}
	if _, ans := ask("pooled"); ans.WarmPool["pooled"].Template != tplID+"-"+b2 || ans.WarmPool["pooled"].CPUs != 4 {
		t.Errorf("after the default tag moved: %+v, want build %s", ans.WarmPool["pooled"], b2)
	}
	// A rebuild of the bare name moves it again.
	_, b3 := buildVersion(t, hs.URL, `{"name":"pooled"}`)
	if _, ans := ask("pooled"); ans.WarmPool["pooled"].Template != tplID+"-"+b3 || ans.WarmPool["pooled"].BuildID != b3 {
		t.Errorf("after a rebuild: %+v, want build %s", ans.WarmPool["pooled"], b3)
	}

	// An agent that asks nothing gets what it always got.
	if status, ans := ask(); status != http.StatusNoContent || ans.WarmPool != nil {
		t.Errorf("heartbeat without refs: %d %+v, want 204", status, ans)
	}
}
