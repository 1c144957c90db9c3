package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// previewUpstream answers like a web app that thinks it is at the root of its server: a page,
// an asset, a redirect to "/login", an attempt to set the proxy's cookie, and a WebSocket echo.
// Every other answer says which sandbox port the proxy routed it to and what arrived.
func previewUpstream(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<p>page of %s</p>", r.Header.Get("X-Test-Route"))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/login", http.StatusFound)
	})
	mux.HandleFunc("/setcookie", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		w.Header().Add("Set-Cookie", PreviewCookie+"=victim.8888; Path=/")
		w.Header().Add("Set-Cookie", "="+PreviewCookie+"=victim.8888; Path=/")
		w.Header().Add("Set-Cookie", PreviewCookie+"=; Max-Age=0; Path=/")
		w.Header().Set("Content-Type", "text/html")
	})
	mux.HandleFunc("/sw.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Header().Set("Service-Worker-Allowed", "/")
		fmt.Fprint(w, "self.onfetch = () => {}")
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
			reply := fmt.Sprintf("%s echo:%s", r.Header.Get("X-Test-Route"), msg)
			if err := c.Write(r.Context(), typ, []byte(reply)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "route=%s path=%s prefix=%s cookie=%s", r.Header.Get("X-Test-Route"), r.URL.EscapedPath(),
			r.Header.Get("X-Forwarded-Prefix"), r.Header.Get("Cookie"))
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// newPreviewProxy serves a proxy in front of previewUpstream whose resolve enforces what a
// real one does: "private" needs its traffic token, "gone" does not exist; a signed-URL
// lookup (Unrouted) routes GET /files?signature=good to envd of "signed" and refuses a bad
// signature. resolved counts the routes that reached resolve.
func newPreviewProxy(t *testing.T) (*httptest.Server, *[]string) {
	up := previewUpstream(t)
	var resolved []string
	h := New(func(r *http.Request, route Route) (Upstream, error) {
		resolved = append(resolved, route.SandboxID+":"+itoa(route.Port))
		switch route.SandboxID {
		case "gone":
			return Upstream{}, &NotFoundError{SandboxID: route.SandboxID}
		case "private":
			if r.Header.Get("E2b-Traffic-Access-Token") != "tok" {
				return Upstream{}, errPrivate
			}
		}
		hdr := http.Header{}
		hdr.Set("X-Test-Route", route.SandboxID+":"+itoa(route.Port))
		return Upstream{Addr: strings.TrimPrefix(up.URL, "http://"), Header: hdr}, nil
	}, Options{
		StatusFor: func(err error) int {
			switch {
			case errors.Is(err, errPrivate):
				return http.StatusForbidden
			case errors.Is(err, errBadSignature):
				return http.StatusUnauthorized
			}
			return http.StatusBadGateway
		},
		Unrouted: func(r *http.Request) (Route, error) {
			if r.URL.Path != "/files" || r.URL.Query().Get("signature") == "" {
				return Route{}, ErrNoRoute
			}
			if r.URL.Query().Get("signature") != "good" {
				return Route{}, errBadSignature
			}
			return Route{SandboxID: "signed", Port: EnvdPort, Path: "/files"}, nil
		},
	})
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, &resolved
}

var (
	errPrivate      = errors.New("sandbox is not public")
	errBadSignature = errors.New("invalid signature")
)

const previewHost = "proxy.test:3002"

func TestPreviewRouting(t *testing.T) {
	px, resolved := newPreviewProxy(t)
	setCookieA := PreviewCookie + "=sbxa.8888; Path=/; HttpOnly; SameSite=Strict"
	tests := []struct {
		name    string
		host    string // default previewHost
		target  string
		referer string
		cookies []string // Cookie header lines
		header  map[string]string

		status        int
		body          string // the body starts with it
		setCookie     []string
		location      string
		resolvedNever bool // no route reached resolve
		// serviceWorkerAllowed is the Service-Worker-Allowed header the client gets.
		serviceWorkerAllowed string
	}{
		// The explicit form: a page points the cookie at its sandbox port.
		{name: "path-form page sets the cookie", target: "/proxy/sbxa/8888/page",
			status: 200, body: "<p>page of sbxa:8888", setCookie: []string{setCookieA}},
		{name: "path-form page with the cookie already pointing there sets nothing", target: "/proxy/sbxa/8888/page",
			cookies: []string{PreviewCookie + "=sbxa.8888"}, status: 200, body: "<p>page of sbxa:8888"},
		{name: "path-form page of another sandbox repoints the cookie", target: "/proxy/sbxa/8888/page",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, setCookie: []string{setCookieA}},
		{name: "path-form asset sets nothing", target: "/proxy/sbxa/8888/app.js",
			status: 200, body: "route=sbxa:8888 path=/app.js prefix=/proxy/sbxa/8888"},
		{name: "path-form page of an ID no cookie could carry sets nothing", target: "/proxy/sbx.a/8888/page", status: 200, body: "<p>page of sbx.a:8888"},
		{name: "path-form envd page sets nothing", target: "/proxy/sbxa/49983/page", status: 200, body: "<p>page of sbxa:49983"},

		// Requests that left the prefix: the Referer first, then the cookie.
		{name: "Referer on this host routes, path kept", target: "/static/app.js?v=1", referer: "http://proxy.test:3002/proxy/sbxa/8888/tree?x=1",
			status: 200, body: "route=sbxa:8888 path=/static/app.js prefix=/proxy/sbxa/8888 cookie="},
		{name: "https Referer without a tail routes", target: "/api/x", referer: "https://PROXY.test:3002/proxy/sbxa/8888",
			status: 200, body: "route=sbxa:8888 path=/api/x"},
		{name: "Referer wins over the cookie", target: "/api/x", referer: "http://proxy.test:3002/proxy/sbxa/8888/",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, body: "route=sbxa:8888 path=/api/x"},
		{name: "foreign-host Referer is ignored", target: "/api/x", referer: "http://evil.test:3002/proxy/sbxa/8888/",
			status: 400, body: `{"code":400,"message":"request names no sandbox`, resolvedNever: true},
		{name: "foreign-host Referer is ignored for the cookie", target: "/api/x", referer: "http://evil.test/proxy/sbxa/8888/",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, body: "route=sbxb:3000 path=/api/x prefix=/proxy/sbxb/3000"},
		{name: "Referer on another port of this host is ignored", target: "/api/x", referer: "http://proxy.test:3003/proxy/sbxa/8888/",
			status: 400, resolvedNever: true},
		{name: "Referer with credentials is ignored", target: "/api/x", referer: "http://u:p@proxy.test:3002/proxy/sbxa/8888/",
			status: 400, resolvedNever: true},
		{name: "unprefixed Referer falls back to the cookie", target: "/api/kernels", referer: "http://proxy.test:3002/notebooks/a.ipynb",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, body: "route=sbxb:3000 path=/api/kernels"},
		{name: "escaped Referer ID is not a route", target: "/api/x", referer: "http://proxy.test:3002/proxy/sbx%61/8888/",
			status: 400, resolvedNever: true},
		{name: "cookie routes, other cookies reach the app", target: "/api/kernels", cookies: []string{"_xsrf=abc; " + PreviewCookie + "=sbxb.3000; theme=dark"},
			status: 200, body: "route=sbxb:3000 path=/api/kernels prefix=/proxy/sbxb/3000 cookie=_xsrf=abc; theme=dark"},
		{name: "cookie in a second Cookie line routes", target: "/x", cookies: []string{"a=1", PreviewCookie + "=sbxb.3000"},
			status: 200, body: "route=sbxb:3000 path=/x prefix=/proxy/sbxb/3000 cookie=a=1"},
		{name: "hinted redirect is rewritten into the prefix", target: "/redirect", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 302, location: "/proxy/sbxb/3000/login"},
		{name: "hinted page sets the cookie of the Referer's sandbox", target: "/page", referer: "http://proxy.test:3002/proxy/sbxa/8888/",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, setCookie: []string{setCookieA}},

		// Malformed cookies are ignored: the request names no sandbox, 400 as before.
		{name: "cookie without port", target: "/x", cookies: []string{PreviewCookie + "=sbxb"}, status: 400, resolvedNever: true},
		{name: "cookie with a word for port", target: "/x", cookies: []string{PreviewCookie + "=sbxb.http"}, status: 400, resolvedNever: true},
		{name: "cookie with port 0", target: "/x", cookies: []string{PreviewCookie + "=sbxb.0"}, status: 400, resolvedNever: true},
		{name: "cookie with port 70000", target: "/x", cookies: []string{PreviewCookie + "=sbxb.70000"}, status: 400, resolvedNever: true},
		{name: "cookie with a leading zero", target: "/x", cookies: []string{PreviewCookie + "=sbxb.03000"}, status: 400, resolvedNever: true},
		{name: "cookie with a signed port", target: "/x", cookies: []string{PreviewCookie + "=sbxb.+3000"}, status: 400, resolvedNever: true},
		{name: "cookie with a trailing part", target: "/x", cookies: []string{PreviewCookie + "=sbxb.3000.1"}, status: 400, resolvedNever: true},
		{name: "cookie with a path in the ID", target: "/x", cookies: []string{PreviewCookie + "=..%2Fsbxb.3000"}, status: 400, resolvedNever: true},
		{name: "cookie with an empty ID", target: "/x", cookies: []string{PreviewCookie + "=.3000"}, status: 400, resolvedNever: true},
		{name: "cookie with a long ID", target: "/x", cookies: []string{PreviewCookie + "=" + strings.Repeat("a", 65) + ".3000"}, status: 400, resolvedNever: true},
		{name: "two cookies are ambiguous", target: "/x", cookies: []string{PreviewCookie + "=sbxb.3000; " + PreviewCookie + "=sbxa.8888"},
			status: 400, body: `{"code":400,"message":"request names no sandbox`, resolvedNever: true},

		// envd's port is never reached by a hint, whatever the path.
		{name: "cookie naming envd", target: "/files?path=/etc/passwd", cookies: []string{PreviewCookie + "=sbxa.49983"},
			status: 400, body: `{"code":400,"message":"a request outside /proxy/ID/PORT/ is never routed to envd's port`, resolvedNever: true},
		{name: "cookie naming envd, internal route", target: "/init", cookies: []string{PreviewCookie + "=sbxa.49983"}, status: 400, resolvedNever: true},
		{name: "cookie naming envd with leading zeros", target: "/x", cookies: []string{PreviewCookie + "=sbxa.049983"}, status: 400,
			body: `{"code":400,"message":"a request outside`, resolvedNever: true},
		{name: "Referer naming envd", target: "/x", referer: "http://proxy.test:3002/proxy/sbxa/49983/files", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 400, body: `{"code":400,"message":"a request outside`, resolvedNever: true},
		{name: "Referer naming envd escaped", target: "/x", referer: "http://proxy.test:3002/proxy/sbxa/%34%39983/", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 400, body: `{"code":400,"message":"a request outside`, resolvedNever: true},
		{name: "Referer naming envd escaped twice", target: "/x", referer: "http://proxy.test:3002/proxy/sbxa/%2534%2539983/",
			status: 400, body: `{"code":400,"message":"a request outside`, resolvedNever: true},

		// Signed URLs keep priority over hints.
		{name: "signed URL wins over Referer and cookie", target: "/files?signature=good", referer: "http://proxy.test:3002/proxy/sbxa/8888/",
			cookies: []string{PreviewCookie + "=sbxb.3000"}, status: 200, body: "route=signed:49983 path=/files prefix= cookie="},
		{name: "bad signature is not rescued by the cookie", target: "/files?signature=bad", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 401, resolvedNever: true},

		// A hint grants nothing: the sandbox's own rules apply as to the explicit form.
		{name: "private sandbox by path form needs its token", target: "/proxy/private/8888/x", status: 403},
		{name: "private sandbox by cookie needs its token", target: "/x", cookies: []string{PreviewCookie + "=private.8888"}, status: 403},
		{name: "private sandbox by Referer needs its token", target: "/x", referer: "http://proxy.test:3002/proxy/private/8888/", status: 403},
		{name: "private sandbox by cookie with its token", target: "/x", cookies: []string{PreviewCookie + "=private.8888"},
			header: map[string]string{"E2b-Traffic-Access-Token": "tok"}, status: 200, body: "route=private:8888"},
		{name: "unknown sandbox by cookie", target: "/x", cookies: []string{PreviewCookie + "=gone.8888"}, status: 502,
			body: `{"code":502,"message":"The sandbox was not found","sandboxId":"gone"}`},

		// A service worker cannot claim the whole origin, hinted or by Service-Worker-Allowed.
		{name: "service worker script outside the prefix", target: "/sw.js", referer: "http://proxy.test:3002/proxy/sbxa/8888/",
			header: map[string]string{"Service-Worker": "script"}, status: 400, body: `{"code":400,"message":"a service worker outside`, resolvedNever: true},
		{name: "service worker script under the prefix keeps its default scope", target: "/proxy/sbxa/8888/sw.js",
			header: map[string]string{"Service-Worker": "script"}, status: 200, body: "self.onfetch"},
		{name: "host form keeps Service-Worker-Allowed", host: "8888-sbxa.proxy.test:3002", target: "/sw.js",
			header: map[string]string{"Service-Worker": "script"}, status: 200, serviceWorkerAllowed: "/"},

		// Other forms never look at hints, and the cookie never reaches a sandbox.
		{name: "host form ignores the cookie", host: "8888-sbxa.proxy.test:3002", target: "/page", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 200, body: "<p>page of sbxa:8888"},
		{name: "header form ignores the Referer", target: "/x", referer: "http://proxy.test:3002/proxy/sbxa/8888/",
			header: map[string]string{HeaderSandboxID: "sbxb", HeaderSandboxPort: "3000"}, status: 200, body: "route=sbxb:3000 path=/x prefix= cookie="},
		{name: "path form strips the cookie", target: "/proxy/sbxa/8888/x", cookies: []string{PreviewCookie + "=sbxb.3000"},
			status: 200, body: "route=sbxa:8888 path=/x prefix=/proxy/sbxa/8888 cookie="},
		{name: "a sandbox cannot set or clear the cookie", target: "/proxy/sbxa/8888/setcookie", cookies: []string{PreviewCookie + "=sbxa.8888"},
			status: 200, setCookie: []string{"app=1; Path=/"}},
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*resolved = nil
			req, _ := http.NewRequest("GET", px.URL+tt.target, nil)
			req.Host = previewHost
			if tt.host != "" {
				req.Host = tt.host
			}
			if tt.referer != "" {
				req.Header.Set("Referer", tt.referer)
			}
			for _, c := range tt.cookies {
				req.Header.Add("Cookie", c)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.status || !strings.HasPrefix(string(b), tt.body) {
				t.Fatalf("status %d body %q, want %d %q…", res.StatusCode, b, tt.status, tt.body)
			}
			if got := res.Header.Values("Set-Cookie"); strings.Join(got, "\n") != strings.Join(tt.setCookie, "\n") {
				t.Errorf("Set-Cookie %q, want %q", got, tt.setCookie)
			}
			if got := res.Header.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if got := res.Header.Get("Service-Worker-Allowed"); got != tt.serviceWorkerAllowed {
				t.Errorf("Service-Worker-Allowed %q, want %q", got, tt.serviceWorkerAllowed)
			}
			if tt.resolvedNever && len(*resolved) > 0 {
				t.Errorf("resolve was asked for %v", *resolved)
			}
		})
	}
}

// TestPreviewWebSocket: a WebSocket handshake carries no Referer, so the cookie routes it;
// without the cookie, or with one naming envd, the upgrade is refused.
func TestPreviewWebSocket(t *testing.T) {
	px, _ := newPreviewProxy(t)
	wsURL := strings.Replace(px.URL, "http", "ws", 1)
	tests := []struct {
		name, target string
		cookie       string
		wantReply    string // "" when the handshake must fail
		wantStatus   int
	}{
		{name: "cookie routes the upgrade", target: "/ws", cookie: PreviewCookie + "=sbxa.8888", wantReply: "sbxa:8888 echo:hi"},
		{name: "path form needs no cookie", target: "/proxy/sbxb/3000/ws", wantReply: "sbxb:3000 echo:hi"},
		{name: "no cookie", target: "/ws", wantStatus: 400},
		{name: "malformed cookie", target: "/ws", cookie: PreviewCookie + "=sbxa", wantStatus: 400},
		{name: "cookie naming envd", target: "/ws", cookie: PreviewCookie + "=sbxa.49983", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			hdr := http.Header{}
			hdr.Set("Host", previewHost)
			if tt.cookie != "" {
				hdr.Set("Cookie", tt.cookie)
			}
			c, res, err := websocket.Dial(ctx, wsURL+tt.target, &websocket.DialOptions{HTTPHeader: hdr, Host: previewHost})
			if tt.wantReply == "" {
				if err == nil {
					c.CloseNow()
					t.Fatal("handshake succeeded, want it refused")
				}
				if res == nil || res.StatusCode != tt.wantStatus {
					t.Fatalf("handshake: %v (response %v), want status %d", err, res, tt.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(ctx)
			if err != nil || string(got) != tt.wantReply {
				t.Fatalf("read %q, %v; want %q", got, err, tt.wantReply)
			}
		})
	}
}

// FuzzPreviewRoute: previewRoute never panics, never routes to envd's port, routes by a
// Referer only on the request's own host, and what it routes is a well-formed route whose
// prefix names it.
func FuzzPreviewRoute(f *testing.F) {
	f.Add("/static/a.js", "proxy.test:3002", "http://proxy.test:3002/proxy/sbxa/8888/", PreviewCookie+"=sbxb.3000")
	f.Add("/x", "proxy.test", "http://proxy.test/proxy/sbxa/%34%39983/", "")
	f.Add("/init", "proxy.test", "", PreviewCookie+"=sbxa.49983")
	f.Add("/init", "proxy.test", "", PreviewCookie+"=sbxa.049983; a=b")
	f.Add("/", "h", "https://H/proxy/a/1", PreviewCookie+"=\"a.1\"")
	f.Add("/a%2Fb", "h", "http://h/proxy/", "="+PreviewCookie+"=a.80")
	f.Fuzz(func(t *testing.T, target, host, referer, cookie string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Host: host, Header: http.Header{}}
		r.Header.Set("Referer", referer)
		r.Header.Set("Cookie", cookie)
		route, ok, err := previewRoute(r)
		if err != nil {
			if ok || !errors.Is(err, errPreviewEnvd) && !errors.Is(err, errPreviewWorker) {
				t.Fatalf("previewRoute: ok %v, err %v", ok, err)
			}
			return
		}
		if !ok {
			return
		}
		if route.Port == EnvdPort || route.Port == 0 || !validPreviewID(route.SandboxID) {
			t.Fatalf("previewRoute(%q, host %q, Referer %q, Cookie %q) = %+v", target, host, referer, cookie, route)
		}
		if route.Prefix != pathPrefix+route.SandboxID+"/"+itoa(route.Port) || route.Path != u.EscapedPath() && !(u.EscapedPath() == "" && route.Path == "/") {
			t.Fatalf("route %+v for %q: prefix or path wrong", route, target)
		}
		if ru, err := url.Parse(referer); err == nil && strings.EqualFold(ru.Host, host) && strings.HasPrefix(ru.EscapedPath(), route.Prefix) {
			return // routed by its own Referer
		}
		if v, ok := previewCookie(r); !ok || v != route.SandboxID+"."+itoa(route.Port) {
			t.Fatalf("route %+v for Referer %q, Cookie %q: neither the Referer on host %q nor the cookie names it", route, referer, cookie, host)
		}
	})
}
