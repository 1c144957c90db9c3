package cp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/store"
)

// signedURL builds what the JS SDK's downloadUrl/uploadUrl build for a secure sandbox when
// E2B_SANDBOX_URL is set: base/files?[username=…&]path=…&signature=…[&signature_expiration=…].
func signedURL(base, path, op, user, token string, exp int64) string {
	q := url.Values{}
	if user != "" {
		q.Set("username", user)
	}
	q.Set("path", path)
	q.Set("signature", auth.Sign(path, op, user, token, exp))
	if exp != 0 {
		q.Set("signature_expiration", strconv.FormatInt(exp, 10))
	}
	return base + "/files?" + q.Encode()
}

// TestSignedFileURLWithoutSandbox: a signed /files URL with no sandbox in the host or headers
// reaches the sandbox whose envd token signed it; bad and expired signatures get E2B envd's
// 401 answers, which name no sandbox; unsigned ones a 400 that says what to do instead.
func TestSignedFileURLWithoutSandbox(t *testing.T) {
	agentProxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s port %s %s", r.Method, r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port"), r.URL.RequestURI())
	}))
	t.Cleanup(agentProxy.Close)
	s, _, st := newTestCP(t)
	ctx := context.Background()
	if err := st.PutHost(ctx, store.Host{ID: "h", State: store.HostReady, ProxyAddr: strings.TrimPrefix(agentProxy.URL, "http://")}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	create := func(id, token string) {
		t.Helper()
		sb := store.Sandbox{ID: id, TeamID: store.DefaultTeam, State: store.StateRunning, HostID: "h", TemplateID: "base", StartedAt: now, EndAt: now.Add(time.Hour),
			AllowPublicTraffic: true, Secure: token != "", EnvdAccessToken: token}
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		create(fmt.Sprintf("sb%02d", i), fmt.Sprintf("token-%02d-%s", i, strings.Repeat("x", 32)))
	}
	create("open", "") // not secure: no token, URLs without a signature
	tok := func(i int) string { return fmt.Sprintf("token-%02d-%s", i, strings.Repeat("x", 32)) }
	ps := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(ps.Close)
	base := ps.URL
	future, past := now.Add(time.Hour).Unix(), now.Add(-10*time.Second).Unix()

	tests := []struct {
		name, method, url string
		status            int
		body              string // exact body for errors; prefix of the served echo
	}{
		{"download, no user", "GET", signedURL(base, "/home/user/a.txt", "read", "", tok(7), 0), 200, "GET sb07 port 49983 /files?"},
		{"download, expiring", "GET", signedURL(base, "a.txt", "read", "", tok(49), future), 200, "GET sb49 port 49983 /files?"},
		{"download as root", "GET", signedURL(base, "a.txt", "read", "root", tok(0), 0), 200, "GET sb00 port 49983"},
		{"upload", "POST", signedURL(base, "up.txt", "write", "", tok(23), future), 200, "POST sb23 port 49983"},
		{"signed for the default user by name, sent without username", "GET",
			strings.Replace(signedURL(base, "a.txt", "read", "user", tok(3), 0), "username=user&", "", 1), 200, "GET sb03"},
		{"read signature used to upload", "POST", signedURL(base, "a.txt", "read", "", tok(7), 0), 401,
			`{"code":401,"message":"invalid signature"}`},
		{"another path", "GET", strings.Replace(signedURL(base, "a.txt", "read", "", tok(7), 0), "path=a.txt", "path=b.txt", 1), 401,
			`{"code":401,"message":"invalid signature"}`},
		{"unknown token", "GET", signedURL(base, "a.txt", "read", "", "not-a-sandbox-token", 0), 401,
			`{"code":401,"message":"invalid signature"}`},
		{"malformed signature", "GET", base + "/files?path=a&signature=v1_abc", 401, `{"code":401,"message":"invalid signature"}`},
		{"signature one character too long", "GET", base + "/files?path=a&signature=v1_" + strings.Repeat("0", 44), 401, `{"code":401,"message":"invalid signature"}`},
		{"expired", "GET", signedURL(base, "a.txt", "read", "", tok(7), past), 401,
			`{"code":401,"message":"signature is already expired"}`},
		{"expiration changed after signing", "GET", strings.Replace(signedURL(base, "a.txt", "read", "", tok(7), past),
			strconv.FormatInt(past, 10), strconv.FormatInt(future, 10), 1), 401, `{"code":401,"message":"invalid signature"}`},
		{"unsigned (a non-secure sandbox's URL)", "GET", base + "/files?path=a.txt", 400, "49983-ID.<domain>"},
		{"bad expiration", "GET", base + "/files?path=a&signature=v1_x&signature_expiration=soon", 400, "signature_expiration must be a Unix time"},
		{"repeated path", "GET", signedURL(base, "a.txt", "read", "", tok(7), 0) + "&path=/etc/shadow", 400, "path appears 2 times"},
		{"PUT", "PUT", signedURL(base, "a.txt", "write", "", tok(7), 0), 400, "only GET and POST"},
		{"not /files", "GET", base + "/other?signature=v1_x", 400, "request names no sandbox"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.url, nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			body := strings.TrimSpace(string(b))
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, body)
			}
			switch {
			case tc.status == 400:
				var e struct{ Message string }
				if json.Unmarshal(b, &e); !strings.Contains(e.Message, tc.body) {
					t.Fatalf("message %q does not contain %q", e.Message, tc.body)
				}
			case tc.status == 200:
				if !strings.Contains(body, tc.body) {
					t.Fatalf("body %q does not contain %q", body, tc.body)
				}
			case body != tc.body:
				t.Fatalf("body %s, want %s", body, tc.body)
			}
		})
	}

	// A sandbox created after the last snapshot is found: a miss waits for a fresh one.
	create("late", "late-token-"+strings.Repeat("y", 32))
	res, err := http.Get(signedURL(base, "a.txt", "read", "", "late-token-"+strings.Repeat("y", 32), 0))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(string(b), "GET late port 49983") {
		t.Fatalf("late sandbox: %d %s", res.StatusCode, b)
	}
}

// TestSignedLookupRefreshesAtMostOncePerInterval: misses do not turn into store load.
func TestSignedLookupRefreshesAtMostOncePerInterval(t *testing.T) {
	loads := 0
	sr := &signedRouter{
		list: func(context.Context) ([]signedEntry, error) {
			loads++
			return []signedEntry{{id: "a", token: []byte("t")}}, nil
		},
		now:         time.Now,
		sem:         make(chan struct{}, 1),
		minInterval: time.Second,
	}
	start := time.Now()
	for time.Since(start) < 2500*time.Millisecond {
		r := httptest.NewRequest("GET", "/files?path=x&signature="+auth.Sign("x", "read", "", "wrong", 0), nil)
		if _, err := sr.route(r); err != errSignatureInvalid {
			t.Fatalf("got %v, want invalid signature", err)
		}
	}
	// One load at the start, then at most one per second.
	if loads < 2 || loads > 4 {
		t.Fatalf("%d loads in 2.5 s of misses, want 2 to 4", loads)
	}
}

// BenchmarkSignedLookup measures finding the sandbox of a signed URL among 1,000 secure
// sandboxes (the snapshot is in memory; its refresh is not part of the request).
func BenchmarkSignedLookup(b *testing.B) {
	const n = 1000
	entries := make([]signedEntry, n)
	for i := range entries {
		// Tokens shaped like Hearth's (64 hex digits).
		entries[i] = signedEntry{id: fmt.Sprintf("sb%04d", i), token: []byte(fmt.Sprintf("%064x", i))}
	}
	sr := &signedRouter{
		list:        func(context.Context) ([]signedEntry, error) { return entries, nil },
		now:         time.Now,
		sem:         make(chan struct{}, 1),
		minInterval: time.Second,
	}
	for _, user := range []string{"", "root"} {
		b.Run("user="+user, func(b *testing.B) {
			target := fmt.Sprintf("%064x", n/2)
			r := httptest.NewRequest("GET", signedURL("", "/home/user/file.txt", "read", user, target, time.Now().Add(time.Hour).Unix()), nil)
			b.ReportAllocs()
			for b.Loop() {
				route, err := sr.route(r)
				if err != nil || route.SandboxID != fmt.Sprintf("sb%04d", n/2) {
					b.Fatalf("%v %v", route, err)
				}
			}
		})
	}
}

// FuzzSignedRoute: the proxy's lookup agrees with envd's check (auth.CheckFileRequest) on
// every request, as net/http made it (an empty method is GET): it routes to a sandbox exactly
// when envd would accept the URL with that sandbox's token, and answers "expired" exactly when
// envd would.
func FuzzSignedRoute(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	entries := []signedEntry{{"a", []byte("token-a")}, {"b", []byte("token-b")}, {"c", []byte("token-c")}}
	sr := &signedRouter{
		list: func(context.Context) ([]signedEntry, error) { return entries, nil },
		now:  func() time.Time { return now },
		sem:  make(chan struct{}, 1),
	}
	for _, seed := range []string{
		strings.TrimPrefix(signedURL("", "/home/user/a", "read", "", "token-b", 0), "/files?"),
		strings.TrimPrefix(signedURL("", "x", "read", "root", "token-a", now.Unix()+5), "/files?"),
		strings.TrimPrefix(signedURL("", "x", "read", "user", "token-c", now.Unix()-5), "/files?"),
		strings.TrimPrefix(signedURL("", "", "write", "undefined", "token-c", 0), "/files?"),
		"path=x&signature=v1_&signature_expiration=0",
		"signature=v1_AAAA&username=&username=root",
	} {
		f.Add("GET", seed)
		f.Add("POST", seed)
	}
	f.Fuzz(func(t *testing.T, method, rawQuery string) {
		r, err := http.NewRequest(method, "http://proxy/files?"+rawQuery, nil)
		if err != nil {
			return
		}
		route, err := sr.route(r)
		q := r.URL.Query()
		accepted := map[string]error{}
		for _, e := range entries {
			_, accepted[e.id] = auth.CheckFileRequest(r.Method, http.Header{}, q, string(e.token), e2bDefaultUser, now)
		}
		switch {
		case err == nil:
			if accepted[route.SandboxID] != nil {
				t.Fatalf("routed to %s, which envd refuses: %v", route.SandboxID, accepted[route.SandboxID])
			}
		case err == errSignatureExpired:
			if !slicesAny(accepted, auth.ErrSignatureExpired) {
				t.Fatalf("expired, but envd says %v", accepted)
			}
		default:
			for id, e := range accepted {
				if e == nil || e == auth.ErrSignatureExpired {
					t.Fatalf("refused with %v, but envd of %s says %v", err, id, e)
				}
			}
		}
	})
}

func slicesAny(m map[string]error, want error) bool {
	for _, e := range m {
		if e == want {
			return true
		}
	}
	return false
}
