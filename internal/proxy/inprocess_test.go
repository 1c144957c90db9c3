package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bigBody is a body larger than the copy buffers.
const bigBody = 2 << 20

// TestInProcess sends requests through a public proxy whose upstream is a second proxy in
// the same process (as in hearth dev), and checks they arrive and answer as over a socket.
func TestInProcess(t *testing.T) {
	release := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.EscapedPath() {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Seen", r.Header.Get("X-Inner")+"|"+r.Header.Get(HeaderSandboxID)+"|"+r.URL.RawQuery)
			w.Write(b)
		case "/a%2Fb":
			io.WriteString(w, "raw "+r.URL.RawPath)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: second\n\n")
		case "/big", "/bigcut":
			w.Header().Set("Content-Length", strconv.Itoa(bigBody+5))
			io.WriteString(w, strings.Repeat("b", bigBody))
			if r.URL.Path == "/big" {
				io.WriteString(w, "-end-")
				return
			}
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/cut":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "short")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			http.NotFound(w, r)
		}
	}))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")

	inner := New(func(r *http.Request, route Route) (Upstream, error) {
		if r.Header.Get("X-Inner") != "token" {
			return Upstream{}, &NotFoundError{SandboxID: route.SandboxID, Detail: "inner check refused"}
		}
		return Upstream{Addr: appAddr}, nil
	}, Options{StatusFor: func(error) int { return http.StatusForbidden }})
	ip := NewInProcess()
	outer := New(func(r *http.Request, route Route) (Upstream, error) {
		h := http.Header{}
		if route.Port != 1 {
			h.Set("X-Inner", "token")
		}
		h.Set(HeaderSandboxID, route.SandboxID)
		h.Set(HeaderSandboxPort, itoa(route.Port))
		return Upstream{Addr: "agent.invalid:1", Header: h, Next: ip.Handler()}, nil
	}, Options{})
	front := httptest.NewServer(outer)
	defer front.Close()

	get := func(method, path, body string) (*http.Response, string, error) {
		req, _ := http.NewRequest(method, front.URL+path, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, string(b), err
	}

	if res, _, _ := get("GET", "/proxy/sbx/80/echo", ""); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("before Set: status %d, want 502", res.StatusCode)
	}
	ip.Set(inner)

	tests := []struct {
		name, method, path, body string
		status                   int
		want, header             string
		wantErr                  bool
	}{
		{name: "post body and routing headers", method: "POST", path: "/proxy/sbx/80/echo?q=1", body: "hello", status: 200, want: "hello", header: "token|sbx|q=1"},
		{name: "escaped path", method: "GET", path: "/proxy/sbx/80/a%2Fb", status: 200, want: "raw /a%2Fb"},
		{name: "inner check refuses", method: "GET", path: "/proxy/sbx/1/echo", status: http.StatusForbidden, want: "inner check refused"},
		{name: "not found from app", method: "GET", path: "/proxy/sbx/80/nope", status: 404, want: "404 page not found"},
		{name: "body cut short", method: "GET", path: "/proxy/sbx/80/cut", status: 200, wantErr: true},
		{name: "large body", method: "GET", path: "/proxy/sbx/80/big", status: 200, want: strings.Repeat("b", 100) + "-end-"},
		{name: "large body cut short", method: "GET", path: "/proxy/sbx/80/bigcut", status: 200, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body, err := get(tt.method, tt.path, tt.body)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("read %q without error, want the cut body to fail", body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %q, want %d containing %q", res.StatusCode, body, tt.status, tt.want)
			}
			if got := res.Header.Get("X-Seen"); got != tt.header {
				t.Fatalf("X-Seen %q, want %q", got, tt.header)
			}
		})
	}

	t.Run("stream arrives as written", func(t *testing.T) {
		res, err := http.Get(front.URL + "/proxy/sbx/80/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(res.Body)
			for sc.Scan() {
				if sc.Text() != "" {
					lines <- sc.Text()
				}
			}
			close(lines)
		}()
		select {
		case l := <-lines:
			if l != "data: first" {
				t.Fatalf("first event %q", l)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("first event not delivered before the stream went on")
		}
		close(release)
		if l := <-lines; l != "data: second" {
			t.Fatalf("second event %q", l)
		}
	})
}

// BenchmarkHop compares the two ways the control plane's proxy reaches an agent proxy in the
// same process: over a Unix socket and handed over in memory (InProcess), for small requests and for
// 8 MB downloads, through a front proxy to a local server.
func BenchmarkHop(b *testing.B) {
	blob := strings.Repeat("x", 8<<20)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/blob" {
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			io.WriteString(w, blob)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	sock, ip := agentHops(b, app)

	for _, hop := range []struct {
		name string
		up   Upstream
	}{
		{"socket", Upstream{Addr: "agent.invalid:1", Socket: sock}},
		{"inprocess", Upstream{Addr: "agent.invalid:1", Next: ip.Handler()}},
	} {
		front := frontProxy(b, hop.up)
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		for _, tc := range []struct {
			name, path string
			size       int64
		}{{"small", "/api", 0}, {"8MB", "/blob", int64(len(blob))}} {
			b.Run(tc.name+"/"+hop.name, func(b *testing.B) {
				b.SetBytes(tc.size)
				b.ReportAllocs()
				for b.Loop() {
					res, err := hc.Get(front.URL + "/proxy/sbx/80" + tc.path)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		}
	}
}
