package hearth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	hproxy "github.com/hearthsh/hearth/internal/proxy"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// Every request to a sandbox carries the headers the proxy routes by, the access token and the
// user, over HTTP/1.1, with Connect's binary codec for RPCs; streams work through a proxy
// that forwards them as they are written.
func TestEnvdRequestsThroughProxy(t *testing.T) {
	// Hearth's own proxy, recording what reaches it.
	target, _ := url.Parse(envd.URL)
	type seen struct{ method, path, proto, id, port, token, auth, ctype string }
	var mu sync.Mutex
	var reqs []seen
	h := hproxy.New(func(r *http.Request, route hproxy.Route) (hproxy.Upstream, error) {
		mu.Lock()
		reqs = append(reqs, seen{r.Method, r.URL.Path, r.Proto, r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port"),
			r.Header.Get("X-Access-Token"), r.Header.Get("Authorization"), r.Header.Get("Content-Type")})
		mu.Unlock()
		// The shared test envd has no access token, so it ignores the one the SDK sends.
		return hproxy.Upstream{Addr: target.Host}, nil
	}, hproxy.Options{})
	proxy := httptest.NewServer(h)
	defer proxy.Close()

	sb := hearth.NewClient(hearth.WithSandboxURL(proxy.URL+"/")).Attach("abcdefghij0123456789", "tok")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out syncBuffer
	if _, err := sb.Commands.Run(ctx, "echo one; sleep 0.2; echo two", &hearth.CommandOptions{User: "root", Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "one\ntwo\n" {
		t.Fatalf("streamed %q through the proxy", out.String())
	}
	path := t.TempDir() + "/f"
	if _, err := sb.Files.Write(ctx, path, strings.NewReader("data"), &hearth.FileOptions{User: "root"}); err != nil {
		t.Fatal(err)
	}
	r, err := sb.Files.Read(ctx, path, &hearth.FileOptions{User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 3 {
		t.Fatalf("proxy saw %d requests, want 3: %+v", len(reqs), reqs)
	}
	for _, s := range reqs {
		if s.proto != "HTTP/1.1" || s.id != "abcdefghij0123456789" || s.port != "49983" || s.token != "tok" || s.auth != "Basic cm9vdDo=" {
			t.Errorf("request %s %s: proto %s, sandbox %q port %q token %q auth %q", s.method, s.path, s.proto, s.id, s.port, s.token, s.auth)
		}
	}
	if reqs[0].path != "/process.Process/Start" || reqs[0].ctype != "application/connect+proto" {
		t.Errorf("command request: %s with %s, want /process.Process/Start with application/connect+proto", reqs[0].path, reqs[0].ctype)
	}
	if reqs[1].method != "POST" || reqs[1].path != "/files" || reqs[1].ctype != "application/octet-stream" {
		t.Errorf("upload request: %s %s with %s, want POST /files with application/octet-stream", reqs[1].method, reqs[1].path, reqs[1].ctype)
	}
}
