package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		name       string
		host, path string
		header     map[string]string
		domain     string
		want       Route
		wantErr    bool
	}{
		{name: "host form", host: "8080-abc123.sbx.test:3002", path: "/x/", domain: "sbx.test",
			want: Route{SandboxID: "abc123", Port: 8080, Path: "/x/"}},
		{name: "host form other domain", host: "8080-abc123.other.test", path: "/", domain: "sbx.test", wantErr: true},
		{name: "host form any domain", host: "49983-abc123.localhost", path: "/files", want: Route{SandboxID: "abc123", Port: 49983, Path: "/files"}},
		{name: "headers", host: "localhost:3002", path: "/api?q=1", header: map[string]string{HeaderSandboxID: "abc", HeaderSandboxPort: "3000"},
			want: Route{SandboxID: "abc", Port: 3000, Path: "/api"}},
		{name: "header bad port", host: "localhost", path: "/", header: map[string]string{HeaderSandboxID: "abc", HeaderSandboxPort: "http"}, wantErr: true},
		{name: "path form keeps trailing slash", host: "localhost", path: "/proxy/abc/8000/dir/",
			want: Route{SandboxID: "abc", Port: 8000, Prefix: "/proxy/abc/8000", Path: "/dir/"}},
		{name: "path form root", host: "localhost", path: "/proxy/abc/8000", want: Route{SandboxID: "abc", Port: 8000, Prefix: "/proxy/abc/8000", Path: "/"}},
		{name: "path form keeps escapes", host: "localhost", path: "/proxy/abc/8000/a%2Fb//c",
			want: Route{SandboxID: "abc", Port: 8000, Prefix: "/proxy/abc/8000", Path: "/a%2Fb//c"}},
		{name: "path form port zero", host: "localhost", path: "/proxy/abc/0/", wantErr: true},
		{name: "nothing", host: "localhost", path: "/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://"+tt.host+tt.path, nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			got, err := ParseRoute(r, tt.domain)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("route = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRewriteLocation(t *testing.T) {
	const prefix, proxyHost, up = "/proxy/abc/8000", "localhost:3002", "10.200.0.2:8000"
	tests := []struct{ in, want string }{
		{"/dir/", "/proxy/abc/8000/dir/"},
		{"/dir/?a=1", "/proxy/abc/8000/dir/?a=1"},
		{"http://localhost:3002/dir/", "http://localhost:3002/proxy/abc/8000/dir/"},
		{"http://10.200.0.2:8000/login?next=%2F", "http://localhost:3002/proxy/abc/8000/login?next=%2F"},
		{"https://example.com/x", "https://example.com/x"}, // foreign: untouched
		{"relative/path", "relative/path"},
		{"//evil.example/x", "//evil.example/x"},
	}
	for _, tt := range tests {
		got, ok := rewriteLocation(tt.in, prefix, proxyHost, up)
		if !ok {
			got = tt.in
		}
		if got != tt.want {
			t.Errorf("rewriteLocation(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// upstream serves redirects, echoes the path, and upgrades /ws to a WebSocket echo.
func upstream(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/dir", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dir/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s raw=%s proto=%s prefix=%s", r.URL.Path, r.URL.EscapedPath(), r.Proto, r.Header.Get("X-Forwarded-Prefix"))
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func newProxy(t *testing.T, addr string) *httptest.Server {
	h := New(func(r *http.Request, route Route) (Upstream, error) {
		if route.SandboxID != "sbx1" {
			return Upstream{}, errors.New("unknown sandbox")
		}
		return Upstream{Addr: addr}, nil
	}, Options{StatusFor: func(error) int { return http.StatusNotFound }})
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, c *http.Client, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestProxyForms(t *testing.T) {
	up := upstream(t)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	px := newProxy(t, upAddr)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	_, body := get(t, noRedirect, px.URL+"/proxy/sbx1/8000/a/b/", nil)
	if body != "path=/a/b/ raw=/a/b/ proto=HTTP/1.1 prefix=/proxy/sbx1/8000" {
		t.Errorf("path form: %q", body)
	}
	_, body = get(t, noRedirect, px.URL+"/some/where?x=1", map[string]string{HeaderSandboxID: "sbx1", HeaderSandboxPort: "8000"})
	if !strings.HasPrefix(body, "path=/some/where ") {
		t.Errorf("header form: %q", body)
	}
	req, _ := http.NewRequest("GET", px.URL+"/hosted", nil)
	req.Host = "8000-sbx1.sandbox.test"
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.HasPrefix(string(b), "path=/hosted ") {
		t.Errorf("host form: %q", b)
	}

	// A directory redirect keeps the prefix.
	res, _ = get(t, noRedirect, px.URL+"/proxy/sbx1/8000/dir", nil)
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/proxy/sbx1/8000/dir/" {
		t.Errorf("redirect: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// Unknown sandbox and envd internals are refused with a JSON error.
	res, body = get(t, noRedirect, px.URL+"/proxy/nope/8000/", nil)
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `"sandboxId":"nope"`) {
		t.Errorf("unknown sandbox: %d %s", res.StatusCode, body)
	}
	res, _ = get(t, noRedirect, px.URL+"/proxy/sbx1/49983/init", nil)
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("/init through the proxy: %d, want 404", res.StatusCode)
	}
}

func TestProxyWebSocket(t *testing.T) {
	up := upstream(t)
	px := newProxy(t, strings.TrimPrefix(up.URL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(px.URL, "http", "ws", 1)+"/proxy/sbx1/8000/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("m%d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("read %q, %v", got, err)
		}
	}
}

// A server that starts listening shortly after the first dial is still reached.
func TestProxyDialRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	px := newProxy(t, addr)

	var started atomic.Bool
	go func() {
		time.Sleep(250 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		started.Store(true)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "late server") })}
		t.Cleanup(func() { srv.Close() })
		srv.Serve(l)
	}()
	res, body := get(t, http.DefaultClient, px.URL+"/proxy/sbx1/8000/", nil)
	if !started.Load() || res.StatusCode != 200 || body != "late server" {
		t.Fatalf("status %d body %q (server started: %v)", res.StatusCode, body, started.Load())
	}

	// A port nobody listens on gives 502 with a message naming it.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln2.Addr().String()
	ln2.Close()
	px2 := newProxy(t, dead)
	res, body = get(t, http.DefaultClient, px2.URL+"/proxy/sbx1/8000/", nil)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "port 8000") {
		t.Fatalf("closed port: %d %s", res.StatusCode, body)
	}
}

// TestProxySocket: an upstream with a Socket is reached through it, and through Addr when
// the socket is absent (envd's host socket around a pause).
func TestProxySocket(t *testing.T) {
	serve := func(ln net.Listener, name string) {
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, name)
		})}
		go s.Serve(ln)
		t.Cleanup(func() { s.Close() })
	}
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(tcpLn, "tcp")
	dir := t.TempDir()
	sock := dir + "/envd.sock"
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serve(unixLn, "unix")
	// A symlink where the socket should be (root in a sandbox can make one) is not followed.
	hostLn, err := net.Listen("unix", t.TempDir()+"/host.sock")
	if err != nil {
		t.Fatal(err)
	}
	serve(hostLn, "host socket")
	if err := os.Symlink(hostLn.Addr().String(), dir+"/link.sock"); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, socket, want string
	}{
		{"socket", sock, "unix"},
		{"socket absent", dir + "/missing.sock", "tcp"},
		{"socket is a symlink", dir + "/link.sock", "tcp"},
		{"no socket", "", "tcp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := New(func(r *http.Request, route Route) (Upstream, error) {
				return Upstream{Addr: tcpLn.Addr().String(), Socket: c.socket}, nil
			}, Options{})
			ps := httptest.NewServer(h)
			defer ps.Close()
			for i := 0; i < 3; i++ { // pooled connections keep the same path
				_, body := get(t, http.DefaultClient, ps.URL+"/x", map[string]string{"E2b-Sandbox-Id": "sbx1", "E2b-Sandbox-Port": "49983"})
				if body != c.want {
					t.Fatalf("request %d answered by %q, want %q", i, body, c.want)
				}
			}
		})
	}
}

// TestProxyUpstreamTransport: an upstream that names a transport is reached through it (the
// benchmark's shared HTTP/2 arm); any other request keeps the handler's HTTP/1.1 transport.
func TestProxyUpstreamTransport(t *testing.T) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	us := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go us.Serve(ln)
	t.Cleanup(func() { us.Close() })
	h2 := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(h2.CloseIdleConnections)
	for _, c := range []struct {
		name      string
		transport http.RoundTripper
		want      string
	}{
		{"own transport", nil, "HTTP/1.1"},
		{"upstream's transport", h2, "HTTP/2.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := New(func(r *http.Request, route Route) (Upstream, error) {
				return Upstream{Addr: ln.Addr().String(), Transport: c.transport}, nil
			}, Options{})
			ps := httptest.NewServer(h)
			defer ps.Close()
			_, body := get(t, http.DefaultClient, ps.URL+"/x", map[string]string{"E2b-Sandbox-Id": "sbx1", "E2b-Sandbox-Port": "8080"})
			if body != c.want {
				t.Fatalf("upstream saw %q, want %q", body, c.want)
			}
		})
	}
}
