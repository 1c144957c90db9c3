package hostreg

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCredentialChecks(t *testing.T) {
	tok := NewToken()
	if len(tok) != 64 || NewToken() == tok {
		t.Fatalf("tokens are not random 32-byte hex: %q", tok)
	}
	h := HashToken(tok)
	for _, c := range []struct {
		tok  string
		want bool
	}{{tok, true}, {"", false}, {tok[:63], false}, {h, false}} {
		if got := TokenMatches(h, c.tok); got != c.want {
			t.Errorf("TokenMatches(%q) = %v, want %v", c.tok, got, c.want)
		}
	}
	if TokenMatches("", "") {
		t.Error("an empty token matched an empty hash")
	}
	for _, c := range []struct {
		header, token string
		want          bool
	}{{"Bearer s", "s", true}, {"Bearer ", "", false}, {"", "", false}, {"bearer s", "s", false}, {"Bearer s2", "s", false}} {
		if got := BearerMatches(c.header, c.token); got != c.want {
			t.Errorf("BearerMatches(%q, %q) = %v, want %v", c.header, c.token, got, c.want)
		}
	}
	if Proof("a", "h", "n") == Proof("b", "h", "n") || Proof("a", "h", "n") == Proof("a", "h2", "n") || Proof("a", "h", "n") == Proof("a", "h", "n2") {
		t.Error("the proof does not depend on token, host and nonce")
	}
	for id, ok := range map[string]bool{"host1": true, "a.b_c-d": true, "": false, "-a": false, "a/b": false, "a b": false} {
		if ValidHostID(id) != ok {
			t.Errorf("ValidHostID(%q) = %v", id, !ok)
		}
	}
}

// TestSenderAnswers: the agent takes either answer a control plane gives a heartbeat: 204,
// a registration's host token, or warm pool resolutions (with or without a token), and
// hands each to Answered with the refs it asked about.
func TestSenderAnswers(t *testing.T) {
	const token = "agent-token"
	var (
		status int
		body   string
	)
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(ProofHeader, Proof(token, "h1", r.Header.Get(NonceHeader)))
		var hb Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil || !slices.Equal(hb.WarmPool, []string{"my-tpl", "x:v2"}) {
			http.Error(w, fmt.Sprintf("heartbeat %+v: %v", hb, err), http.StatusBadRequest)
			return
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	defer cp.Close()
	var got []Answer
	s := &Sender{ControlPlane: cp.URL, Token: token, HostID: "h1", TokenFile: filepath.Join(t.TempDir(), "host-token"),
		Build: func(context.Context) (Heartbeat, error) {
			return Heartbeat{RPCAddr: "127.0.0.1:1", ProxyAddr: "127.0.0.1:2", WarmPool: []string{"my-tpl", "x:v2"}}, nil
		},
		Answered: func(hb Heartbeat, builtAt time.Time, ans Answer) {
			if len(hb.WarmPool) != 2 || time.Since(builtAt) > time.Minute {
				t.Errorf("answered for %+v built at %v", hb, builtAt)
			}
			got = append(got, ans)
		},
	}
	for _, tc := range []struct {
		status    int
		body      string
		want      Answer
		wantToken string
	}{
		{status: http.StatusNoContent, want: Answer{}}, // a control plane from before warm pool refs
		{status: http.StatusOK, body: `{"hostToken":"tok1"}`, want: Answer{HostToken: "tok1"}, wantToken: "tok1"},
		{status: http.StatusOK, body: `{"warmPool":{"my-tpl":{"template":"t-b","cpus":2,"memoryMiB":512},"x:v2":{"error":"tag \"v2\" of template \"x\" not found"}}}`,
			want: Answer{WarmPool: map[string]WarmTarget{"my-tpl": {Template: "t-b", CPUs: 2, MemoryMiB: 512}, "x:v2": {Error: `tag "v2" of template "x" not found`}}}, wantToken: "tok1"},
	} {
		status, body, got = tc.status, tc.body, nil
		if err := s.Send(context.Background()); err != nil {
			t.Fatalf("answer %d %s: %v", tc.status, tc.body, err)
		}
		if len(got) != 1 || got[0].HostToken != tc.want.HostToken || !maps.Equal(got[0].WarmPool, tc.want.WarmPool) {
			t.Errorf("answer %d %s: Answered with %+v, want %+v", tc.status, tc.body, got, tc.want)
		}
		if b, _ := os.ReadFile(s.TokenFile); strings.TrimSpace(string(b)) != tc.wantToken {
			t.Errorf("answer %d %s: host token file %q, want %q", tc.status, tc.body, b, tc.wantToken)
		}
	}
	// An answer that is no JSON is refused, and not handed on.
	status, body, got = http.StatusOK, "garbage", nil
	if err := s.Send(context.Background()); err == nil || len(got) != 0 {
		t.Errorf("garbage answer: %v, Answered %d times", err, len(got))
	}
}
