package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// internalPaths are spellings of envd's internal routes that envd's router (Go's ServeMux,
// which decodes the path, and redirects unclean paths to their clean form) serves or
// redirects to them.
var internalPaths = []string{
	"/init", "/freeze", "/thaw",
	"/init/", "/freeze/", "/thaw//",
	"/%66reeze", "/%74haw", "/%69nit", "/%69%6E%69%74", "/fr%65%65ze", "/%74%68%61%77",
	"//init", "///freeze", "/./thaw", "/a/../init", "/x/./../freeze", "/../thaw",
	"/%2Finit", "/%2finit", "%2Ffreeze", "/.%2Fthaw", "/a%2F..%2Finit", "/%2E/freeze", "/%2e%2e/thaw",
	"/INIT", "/Freeze", "/%2566reeze", "/%252F%2574haw",
}

// TestInternalEnvdRoutesRefusedInEveryForm sends every spelling of an internal route through
// every routing form to an upstream routed like envd: none arrives, each gets 404.
func TestInternalEnvdRoutesRefusedInEveryForm(t *testing.T) {
	var internalHits, otherHits atomic.Int32
	mux := http.NewServeMux()
	for _, p := range []string{"/init", "/freeze", "/thaw"} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) { internalHits.Add(1); w.WriteHeader(http.StatusNoContent) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { otherHits.Add(1) })
	up := httptest.NewServer(mux)
	defer up.Close()
	h := New(func(r *http.Request, route Route) (Upstream, error) {
		return Upstream{Addr: strings.TrimPrefix(up.URL, "http://")}, nil
	}, Options{})

	forms := []struct {
		name string
		req  func(p string) *http.Request
	}{
		{"host", func(p string) *http.Request {
			r := httptest.NewRequest("POST", p, nil)
			r.Host = "49983-sbx1.sandbox.test"
			return r
		}},
		{"headers", func(p string) *http.Request {
			r := httptest.NewRequest("POST", p, nil)
			r.Header.Set(HeaderSandboxID, "sbx1")
			r.Header.Set(HeaderSandboxPort, "49983")
			return r
		}},
		{"path", func(p string) *http.Request {
			if !strings.HasPrefix(p, "/") {
				p = "/" + p
			}
			return httptest.NewRequest("POST", "/proxy/sbx1/49983"+p, nil)
		}},
		{"absolute-form", func(p string) *http.Request {
			if !strings.HasPrefix(p, "/") {
				p = "/" + p
			}
			return httptest.NewRequest("POST", "http://49983-sbx1.sandbox.test"+p, nil)
		}},
	}
	for _, f := range forms {
		for _, p := range internalPaths {
			if f.name != "path" && f.name != "absolute-form" && !strings.HasPrefix(p, "/") {
				continue // not a request target a server accepts
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, f.req(p))
			if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "internal") {
				t.Errorf("%s form, %s: status %d %q, want 404 (internal route)", f.name, p, rec.Code, rec.Body.String())
			}
		}
	}
	if n := internalHits.Load() + otherHits.Load(); n != 0 {
		t.Fatalf("%d requests for internal routes reached the upstream", n)
	}

	// Routes that only look alike, and other ports, go through.
	for _, c := range []struct{ port, path string }{
		{"49983", "/initialize"}, {"49983", "/files"}, {"49983", "/thawed"}, {"49983", "/init.d"},
		{"49983", "/%69nitx"}, {"8080", "/init"}, {"8080", "/%66reeze"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/proxy/sbx1/"+c.port+c.path, nil))
		if rec.Code != http.StatusOK && rec.Code != http.StatusNoContent {
			t.Errorf("port %s %s: status %d, want it proxied", c.port, c.path, rec.Code)
		}
	}
	if otherHits.Load() != 5 || internalHits.Load() != 2 { // port 8080's routes are that server's own
		t.Errorf("upstream hits: %d other, %d internal", otherHits.Load(), internalHits.Load())
	}
}

// envdLikeMux routes like envd: the internal routes, and everything else elsewhere.
func envdLikeMux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, p := range []string{"/init", "/freeze", "/thaw"} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Internal", "1") })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {})
	return mux
}

// reachesInternal reports whether a request forwarded with the escaped path p (as rewrite
// forwards it) reaches an internal route of envdLikeMux, following its redirects.
func reachesInternal(mux *http.ServeMux, p string) bool {
	for range 4 {
		u := &url.URL{Path: p, RawPath: p}
		if d, err := url.PathUnescape(p); err == nil {
			u.Path = d
		} else {
			return false // envd's server refuses a request line it cannot parse
		}
		u.RawPath = p
		r := &http.Request{Method: "POST", URL: u, Header: http.Header{}, Host: "envd"}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		if rec.Header().Get("X-Internal") != "" {
			return true
		}
		loc := rec.Header().Get("Location")
		if rec.Code/100 != 3 || loc == "" {
			return false
		}
		lu, err := url.Parse(loc)
		if err != nil {
			return false
		}
		p = lu.EscapedPath()
	}
	return false
}

func TestInternalEnvdRouteAgreesWithEnvdRouter(t *testing.T) {
	mux := envdLikeMux()
	for _, p := range internalPaths {
		if reachesInternal(mux, p) && !internalEnvdRoute(Route{Port: EnvdPort, Path: p}) {
			t.Errorf("%s reaches an internal route but is not refused", p)
		}
	}
}

// FuzzInternalEnvdRoute: no path that envd's router serves as an internal route (directly or
// through its redirects) passes the proxy's check.
func FuzzInternalEnvdRoute(f *testing.F) {
	for _, p := range internalPaths {
		f.Add(p)
	}
	f.Add("/files")
	f.Add("/process.Process/Start")
	mux := envdLikeMux()
	f.Fuzz(func(t *testing.T, p string) {
		if reachesInternal(mux, p) && !internalEnvdRoute(Route{Port: EnvdPort, Path: p}) {
			t.Fatalf("%q reaches an internal route of envd but the proxy forwards it", p)
		}
	})
}

// FuzzParseRoute: ParseRoute never panics, and what it accepts is a well-formed route.
func FuzzParseRoute(f *testing.F) {
	f.Add("/proxy/sbx1/49983/%66reeze", "proxy.test", "", "")
	f.Add("/init", "49983-sbx1.sandbox.test", "", "")
	f.Add("//init", "x", "sbx1", "49983")
	f.Add("/proxy/sbx1/8000", "x", "", "")
	f.Add("/proxy//49983/thaw", "x", "", "")
	f.Add("/a", "49983-.sandbox.test:3002", "", "")
	f.Add("/a", "[::1]:80", "id", "0")
	f.Fuzz(func(t *testing.T, target, host, id, port string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Host: host, Header: http.Header{}}
		if id != "" {
			r.Header.Set(HeaderSandboxID, id)
			r.Header.Set(HeaderSandboxPort, port)
		}
		route, err := ParseRoute(r, "")
		if err != nil {
			return
		}
		// Path is "/..." but for the asterisk-form target ("OPTIONS *"), forwarded as it is.
		if route.SandboxID == "" || route.Port == 0 || (!strings.HasPrefix(route.Path, "/") && route.Path != "*") {
			t.Fatalf("ParseRoute(%q, host %q, id %q, port %q) = %+v: incomplete route", target, host, id, port, route)
		}
		if route.Prefix != "" && !strings.HasPrefix(u.EscapedPath(), route.Prefix) {
			t.Fatalf("prefix %q is not a prefix of %q", route.Prefix, u.EscapedPath())
		}
		if route.Port == EnvdPort {
			_ = internalEnvdRoute(route)
		}
	})
}
