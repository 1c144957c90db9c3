package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHandOffMatchesSocket sends the same requests through a public proxy whose next hop is
// a second proxy, once over that proxy's Unix socket and once handed over in memory
// (Upstream.Next, as hearth dev does), and checks that the sandbox's server and the client
// see the same thing either way: the request's line, host and headers at the server, the
// status, headers (this hop's edits included) and body at the client.
func TestHandOffMatchesSocket(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var seen []string
		for k, vs := range r.Header {
			seen = append(seen, k+": "+strings.Join(vs, ","))
		}
		slices.Sort(seen)
		w.Header().Set("X-Seen", r.Method+" "+r.RequestURI+" host="+r.Host+" | "+strings.Join(seen, " | "))
		switch r.URL.Path {
		case "/redirect":
			w.Header().Set("Location", "/login?next=%2F")
			w.WriteHeader(http.StatusFound)
		case "/page":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Service-Worker-Allowed", "/")
			w.Header().Add("Set-Cookie", PreviewCookie+"=forged; Path=/")
			w.Header().Add("Set-Cookie", "app=1")
			io.WriteString(w, "<p>hi</p>")
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		default:
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	}))
	defer app.Close()
	sock, ip := agentHops(t, app)
	overSocket := frontProxy(t, Upstream{Addr: "agent.invalid:1", Socket: sock})
	handedOff := frontProxy(t, Upstream{Addr: "agent.invalid:1", Next: ip.Handler()})

	tests := []struct {
		name, method, path, body string
		header                   http.Header
	}{
		{name: "post with body", method: "POST", path: "/proxy/sbx/80/echo?q=1", body: "hello"},
		{name: "escaped path", method: "GET", path: "/proxy/sbx/80/a%2Fb/"},
		{name: "hop-by-hop and forwarding headers", method: "GET", path: "/proxy/sbx/80/h", header: http.Header{
			"Connection": {"X-Hop"}, "X-Hop": {"dropped"}, "Proxy-Authorization": {"Basic eA=="},
			"X-Forwarded-For": {"6.6.6.6"}, "Forwarded": {"for=6.6.6.6"}, "X-Kept": {"yes"},
			"Cookie": {PreviewCookie + "=sbx.80; app=1"}}},
		{name: "redirect in the path form", method: "GET", path: "/proxy/sbx/80/redirect"},
		{name: "page sets cookies", method: "GET", path: "/proxy/sbx/80/page"},
		{name: "trailers", method: "GET", path: "/proxy/sbx/80/trailer", header: http.Header{"Te": {"trailers"}}},
		{name: "internal envd route", method: "GET", path: "/proxy/sbx/49983/health"},
	}
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	type seen struct {
		status   int
		header   http.Header
		body     string
		trailers http.Header
	}
	do := func(t *testing.T, base, method, path, body string, h http.Header) seen {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, vs := range h {
			req.Header[k] = vs
		}
		req.Host = "client.example:1234" // the same Host header for both proxies
		res, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		res.Header.Del("Date")
		return seen{res.StatusCode, res.Header, string(b), res.Trailer}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := do(t, overSocket.URL, tt.method, tt.path, tt.body, tt.header)
			got := do(t, handedOff.URL, tt.method, tt.path, tt.body, tt.header)
			if got.status != want.status || got.body != want.body {
				t.Fatalf("handed off: %d %q; over the socket: %d %q", got.status, got.body, want.status, want.body)
			}
			for _, k := range unionKeys(got.header, want.header) {
				if g, w := got.header.Values(k), want.header.Values(k); !slices.Equal(g, w) {
					t.Errorf("header %s: handed off %q, over the socket %q", k, g, w)
				}
			}
			if g, w := got.trailers.Get("X-Sum"), want.trailers.Get("X-Sum"); g != w {
				t.Errorf("trailer X-Sum: handed off %q, over the socket %q", g, w)
			}
		})
	}

	// The edits this hop makes must be there at all (not merely equal in both arms).
	red := do(t, handedOff.URL, "GET", "/proxy/sbx/80/redirect", "", nil)
	if loc := red.header.Get("Location"); loc != "/proxy/sbx/80/login?next=%2F" {
		t.Errorf("Location %q, want it inside the path prefix", loc)
	}
	page := do(t, handedOff.URL, "GET", "/proxy/sbx/80/page", "", nil)
	if page.header.Get("Service-Worker-Allowed") != "" || slices.ContainsFunc(page.header.Values("Set-Cookie"), func(c string) bool { return strings.Contains(c, "forged") }) {
		t.Errorf("page headers %v: the sandbox's Service-Worker-Allowed or preview cookie got through", page.header)
	}
	hop := do(t, handedOff.URL, "GET", "/proxy/sbx/80/h", "", tests[2].header).header.Get("X-Seen")
	for _, leaked := range []string{"X-Hop", "Proxy-Authorization", "6.6.6.6", "sbx.80"} {
		if strings.Contains(hop, leaked) {
			t.Errorf("the server saw %q: %s", leaked, hop)
		}
	}
	if !strings.Contains(hop, "X-Kept: yes") {
		t.Errorf("the server did not see X-Kept: %s", hop)
	}
}

// TestHandOffUpgrade upgrades a connection through a handed-off hop: the next hop hijacks
// the client's connection through the hand-off's ResponseWriter, and bytes flow both ways.
func TestHandOffUpgrade(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	ip := NewInProcess()
	ip.Set(New(func(*http.Request, Route) (Upstream, error) { return Upstream{Addr: appAddr}, nil }, Options{}))
	front := httptest.NewServer(New(func(_ *http.Request, route Route) (Upstream, error) {
		return Upstream{Addr: "agent.invalid:1", Next: ip.Handler(),
			Header: http.Header{HeaderSandboxID: {route.SandboxID}, HeaderSandboxPort: {itoa(route.Port)}}}, nil
	}, Options{}))
	defer front.Close()

	c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /proxy/sbx/80/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("after the upgrade read %q, %v; want %q", line, err, "echo ping\n")
	}
}

func unionKeys(a, b http.Header) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// TestHandOffRequestForm checks the request the next hop's handler itself gets (before any
// proxying of its own): the form of one read off a plain connection from this proxy, with
// the client's hop-by-hop and forwarding headers gone and this hop's routing headers set.
func TestHandOffRequestForm(t *testing.T) {
	var got *http.Request
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r })
	front := httptest.NewServer(New(func(_ *http.Request, route Route) (Upstream, error) {
		return Upstream{Addr: "agent.invalid:1", Next: next,
			Header: http.Header{HeaderSandboxID: {route.SandboxID}, HeaderSandboxPort: {itoa(route.Port)}}}, nil
	}, Options{}))
	defer front.Close()
	req, _ := http.NewRequest("GET", front.URL+"/proxy/sbx/80/a%2Fb?q=1", nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Proxy-Authorization", "Basic eA==")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got == nil {
		t.Fatal("the next hop got no request")
	}
	for _, h := range []string{"Connection", "X-Hop", "Proxy-Authorization"} {
		if v := got.Header.Get(h); v != "" {
			t.Errorf("next hop saw %s: %q", h, v)
		}
	}
	checks := []struct{ what, got, want string }{
		{"RequestURI", got.RequestURI, "/a%2Fb?q=1"},
		{"RemoteAddr", got.RemoteAddr, inProcessRemoteAddr},
		{"Proto", got.Proto, "HTTP/1.1"},
		{"URL.Host", got.URL.Host, ""},
		{HeaderSandboxID, got.Header.Get(HeaderSandboxID), "sbx"},
		{"X-Forwarded-For", got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s %q, want %q", c.what, c.got, c.want)
		}
	}
}

// agentHops serves app behind an agent-like proxy, reachable over a Unix socket (sock) and
// in memory (ip), as hearth dev's agent proxy is.
func agentHops(tb testing.TB, app *httptest.Server) (sock string, ip *InProcess) {
	appAddr := strings.TrimPrefix(app.URL, "http://")
	inner := New(func(*http.Request, Route) (Upstream, error) { return Upstream{Addr: appAddr}, nil }, Options{})
	sock = filepath.Join(tb.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: inner}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	ip = NewInProcess()
	ip.Set(inner)
	return sock, ip
}

// frontProxy is a public proxy sending every route to up with the agent's routing headers.
func frontProxy(tb testing.TB, up Upstream) *httptest.Server {
	front := httptest.NewServer(New(func(_ *http.Request, route Route) (Upstream, error) {
		up.Header = http.Header{HeaderSandboxID: {route.SandboxID}, HeaderSandboxPort: {itoa(route.Port)}}
		return up, nil
	}, Options{}))
	tb.Cleanup(front.Close)
	return front
}
