package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/confine"
)

// EnvdPort is envd's port; its internal routes are never reachable through a proxy.
const EnvdPort = 49983

// Upstream is where a resolved request goes.
type Upstream struct {
	// Addr is the host:port to dial.
	Addr string
	// Socket, when set, is a Unix socket that reaches the same server as Addr by a quicker
	// path (envd's host socket under gVisor); dials fall back to Addr when it is absent.
	Socket string
	// Header is added to the upstream request (the next hop's routing headers).
	Header http.Header
	// Ctx, when set, replaces the request's context: the agent hands out tracked contexts
	// that a pause cancels.
	Ctx context.Context
	// Done is called when the request, or the WebSocket it upgraded to, has finished.
	Done func()
	// OnStream, when set, is called when the response turns out to be a long-lived stream
	// (a WebSocket, a Connect streaming RPC, server-sent events; see stream.go), with a
	// function that ends the stream cleanly with a reason. The agent hands it to conntrack, so
	// a pause ends streams at once instead of waiting for them.
	OnStream func(end func(reason string))
	// Next, when set, is the next hop's handler in this very process (hearth dev's agent
	// proxy): the request is handed to it as it would arrive over a socket, and it answers
	// the client directly (handoff.go). Addr is then only the name the request is sent to;
	// OnStream is not called (the next hop tracks its own streams).
	Next http.Handler
	// Transport, when set, carries this request instead of the handler's own HTTP/1.1
	// transport. Only the benchmark's shared-transport arm sets it (internal/cp's
	// benchshared.go, built with the benchproxy tag); production traffic always takes the
	// dedicated transport.
	Transport http.RoundTripper
}

// ResolveFunc maps a route to an upstream, or fails with an error that StatusFor maps to an
// HTTP status.
type ResolveFunc func(r *http.Request, route Route) (Upstream, error)

// Handler is the reverse proxy. Create it with New.
type Handler struct {
	domain    string
	resolve   ResolveFunc
	unrouted  func(*http.Request) (Route, error)
	statusFor func(error) int
	log       *slog.Logger
	transport *http.Transport

	// proxies caches one ReverseProxy per sandbox, port and upstream host.
	proxies sync.Map // cacheKey → *httputil.ReverseProxy
}

// flushInterval bounds how long the head and body of a response of known length wait in
// the server's buffers: headers sent before a slow body reach the client this soon.
const flushInterval = 10 * time.Millisecond

type cacheKey struct {
	sandbox string
	port    uint16
	addr    string
}

// Options configure a Handler.
type Options struct {
	// Domain is the suffix of host routes ("PORT-ID.<domain>"); empty accepts any. A port
	// after it ("hearth.localhost:3002", the form SDKs are told so that the URLs they build
	// carry the port) is ignored here: the Host header's port is not part of the route.
	Domain string
	// Unrouted, when set, is asked for the route of a request that names no sandbox (the
	// control plane finds signed file URLs by their signature). An error it returns is
	// answered with StatusFor's status, or 400 when it wraps ErrNoRoute.
	Unrouted func(r *http.Request) (Route, error)
	// StatusFor maps a resolve error to an HTTP status; nil means 502 for everything.
	StatusFor func(error) int
	Log       *slog.Logger
	// DialRetries is how often a refused dial is retried, with linear backoff: a server that
	// just started needs up to a second before envd's port forwarder exposes it. Default 3.
	DialRetries int
}

// New returns a proxy Handler with its own HTTP/1.1-only transport.
func New(resolve ResolveFunc, o Options) *Handler {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.StatusFor == nil {
		o.StatusFor = func(error) int { return http.StatusBadGateway }
	}
	if o.DialRetries <= 0 {
		o.DialRetries = 3
	}
	return &Handler{
		domain:    routeDomain(o.Domain),
		resolve:   resolve,
		unrouted:  o.Unrouted,
		statusFor: o.StatusFor,
		log:       o.Log,
		transport: NewTransport(o.DialRetries),
	}
}

// NewTransport returns an HTTP/1.1-only transport whose dials retry refused connections
// retries times with linear backoff (100 ms, 200 ms, …).
func NewTransport(retries int) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Pooled connections are keyed by Addr, so one that reached Addr over the
			// socket serves any later request for Addr just as well.
			if rt, ok := ctx.Value(routeKey{}).(*routed); ok && rt.up.Socket != "" && rt.up.Addr == addr {
				if c, err := confine.Dial(ctx, d, rt.up.Socket); err == nil {
					return c, nil
				}
			}
			var err error
			for attempt := 0; ; attempt++ {
				var c net.Conn
				if c, err = d.DialContext(ctx, network, addr); err == nil {
					return c, nil
				}
				if attempt >= retries || ctx.Err() != nil {
					return nil, err
				}
				select {
				case <-ctx.Done():
					return nil, err
				case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
				}
			}
		},
		ForceAttemptHTTP2: false,
		// An empty, non-nil TLSNextProto turns HTTP/2 off: proxy traffic stays on HTTP/1.1.
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls and streams are legitimate
		ExpectContinueTimeout: time.Second,
	}
}

type routeKey struct{}

type routed struct {
	route Route
	up    Upstream
	host  string // the client-facing host, for Location rewriting
	// cookie is the preview cookie the request carried, secure whether it came over TLS: a
	// path-form page's response sets the cookie when it would change.
	cookie string
	secure bool
	// cancel aborts the upstream request, to unblock a stream that is being ended; set only
	// when Upstream.OnStream is.
	cancel context.CancelFunc
}

// ServeHTTP routes, resolves and forwards one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, err := ParseRoute(r, h.domain)
	if errors.Is(err, ErrNoRoute) && h.unrouted != nil {
		if route, err = h.unrouted(r); err != nil && !errors.Is(err, ErrNoRoute) {
			h.fail(w, r, h.statusFor(err), Route{}, err)
			return
		}
	}
	if errors.Is(err, ErrNoRoute) {
		// Signed URLs had their turn: what is left may be a path-form page's request that
		// left the prefix (see preview.go).
		hinted, ok, herr := previewRoute(r)
		if herr != nil {
			h.fail(w, r, http.StatusBadRequest, Route{}, herr)
			return
		}
		if ok {
			route, err = hinted, nil
		}
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, Route{}, err)
		return
	}
	if internalEnvdRoute(route) {
		h.fail(w, r, http.StatusNotFound, route, errors.New("this envd route is internal"))
		return
	}
	up, err := h.resolve(r, route)
	if err != nil {
		h.fail(w, r, h.statusFor(err), route, err)
		return
	}
	if up.Done != nil {
		defer up.Done()
	}
	ctx := r.Context()
	if up.Ctx != nil {
		ctx = up.Ctx
	}
	rt := &routed{route: route, up: up, host: r.Host, secure: r.TLS != nil}
	rt.cookie, _ = previewCookie(r)
	if up.OnStream != nil {
		// Only a hop that ends streams needs to abort the upstream request itself.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		rt.cancel = cancel
	}
	ctx = context.WithValue(ctx, routeKey{}, rt)
	// Streaming RPCs (envd's Start, WatchDir) answer before the client has finished sending
	// its request body. Without full duplex, Go's HTTP/1.1 server closes the request body
	// once the response headers are flushed, the copy of the body upstream fails, and the
	// transport tears down the upstream connection in the middle of the response.
	_ = http.NewResponseController(w).EnableFullDuplex()
	if up.Next != nil {
		handOff(w, r.WithContext(ctx), rt, up.Next)
		return
	}
	h.proxyFor(route, up.Addr).ServeHTTP(w, r.WithContext(ctx))
}

// Evict drops the cached proxies of a sandbox (on pause and destroy) and closes idle
// upstream connections, so nothing reaches the old address afterwards.
func (h *Handler) Evict(sandboxID string) {
	h.proxies.Range(func(k, _ any) bool {
		if k.(cacheKey).sandbox == sandboxID {
			h.proxies.Delete(k)
		}
		return true
	})
	h.transport.CloseIdleConnections()
}

func (h *Handler) proxyFor(route Route, addr string) *httputil.ReverseProxy {
	key := cacheKey{route.SandboxID, route.Port, addr}
	if p, ok := h.proxies.Load(key); ok {
		return p.(*httputil.ReverseProxy)
	}
	buffers := copyBuffers
	if route.Port == EnvdPort {
		buffers = envdBuffers
	}
	p := &httputil.ReverseProxy{
		Transport: pickTransport{h.transport},
		// ReverseProxy flushes server-sent events and bodies of unknown length (streams,
		// Connect streaming RPCs) after every write whatever this says. A body of known
		// length is flushed within flushInterval: -1 here would cost a write system call for
		// the headers alone on every small response (the first flush runs at once, before
		// the body is copied), and one per buffer on a download.
		FlushInterval:  flushInterval,
		BufferPool:     buffers,
		Rewrite:        rewrite,
		ModifyResponse: modifyResponse,
		ErrorHandler:   h.upstreamError,
	}
	actual, _ := h.proxies.LoadOrStore(key, p)
	return actual.(*httputil.ReverseProxy)
}

// pickTransport sends a request through its upstream's Transport when it names one, else
// through the handler's own.
type pickTransport struct{ own *http.Transport }

func (p pickTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if rt, ok := r.Context().Value(routeKey{}).(*routed); ok && rt.up.Transport != nil {
		return rt.up.Transport.RoundTrip(r)
	}
	return p.own.RoundTrip(r)
}

func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey{}).(*routed)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = rt.up.Addr
	// The path is set by concatenation from the escaped original: no cleaning, so trailing
	// slashes and encoded characters reach the server as the client sent them.
	if p, err := url.PathUnescape(rt.route.Path); err == nil {
		pr.Out.URL.Path = p
	}
	pr.Out.URL.RawPath = rt.route.Path
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	stripPreviewCookie(pr.Out.Header)
	for k, vs := range rt.up.Header {
		pr.Out.Header[k] = vs
	}
	if rt.route.Prefix != "" {
		pr.Out.Header.Set("X-Forwarded-Prefix", rt.route.Prefix)
	}
}

// modifyResponse makes streams endable and edits the response's head (editResponseHeader).
func modifyResponse(res *http.Response) error {
	rt := res.Request.Context().Value(routeKey{}).(*routed)
	if rt.up.OnStream != nil {
		if kind := classify(res); kind != notStream {
			up := res.Body
			b := newEndableBody(up, kind, func() {
				rt.cancel()
				if kind == webSocket || kind == otherUpgrade {
					up.Close() // an upgraded connection is not the request's any more
				}
			})
			res.Body = b
			rt.up.OnStream(b.end)
		}
	}
	editResponseHeader(res.Header, rt)
	return nil
}

// editResponseHeader keeps redirects inside the /proxy/ID/PORT prefix and points the preview
// cookie at the sandbox port of a path-form page.
func editResponseHeader(h http.Header, rt *routed) {
	// The preview cookie is the proxy's: a sandbox can neither set nor clear it.
	stripPreviewSetCookie(h)
	if rt.route.Prefix == "" {
		return
	}
	// A path-form page's service workers stay within its prefix: Service-Worker-Allowed
	// would let one claim "/", every other preview on this origin included.
	h.Del("Service-Worker-Allowed")
	if rt.route.Port != EnvdPort && validPreviewID(rt.route.SandboxID) && isHTML(h) {
		if want := rt.route.SandboxID + "." + itoa(rt.route.Port); rt.cookie != want {
			h.Add("Set-Cookie", previewSetCookie(rt.route, rt.secure))
		}
	}
	loc := h.Get("Location")
	if loc == "" {
		return
	}
	if nl, ok := rewriteLocation(loc, rt.route.Prefix, rt.host, rt.up.Addr); ok {
		h.Set("Location", nl)
	}
}

// rewriteLocation prefixes root-relative redirects, and absolute ones that point back at
// the proxy or the upstream itself. Relative ("x/y") and foreign redirects are left alone.
func rewriteLocation(loc, prefix, proxyHost, upstreamAddr string) (string, bool) {
	if strings.HasPrefix(loc, "//") {
		return "", false
	}
	if strings.HasPrefix(loc, "/") {
		return prefix + loc, true
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false
	}
	if !strings.EqualFold(u.Host, proxyHost) && !strings.EqualFold(u.Host, upstreamAddr) {
		return "", false
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	u.Path, u.RawPath = "", ""
	u.Host = proxyHost
	out := u.Scheme + "://" + u.Host + prefix + p
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	if u.Fragment != "" {
		out += "#" + u.EscapedFragment()
	}
	return out, true
}

// upstreamError reports a sandbox port that does not answer.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	rt := r.Context().Value(routeKey{}).(*routed)
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client left, or a pause closed the connection: nothing to tell.
		return
	}
	h.fail(w, r, http.StatusBadGateway, rt.route, fmt.Errorf("%s: no server answered on port %d of sandbox %s: %v", PortClosedMessage, rt.route.Port, rt.route.SandboxID, err))
}

// fail writes a JSON error in the shape of E2B's proxy ({"message", "sandboxId", "code", and
// "port" when the sandbox is up but the port is not), or a small HTML page for browsers.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, route Route, err error) {
	h.log.Debug("proxy error", "sandbox", route.SandboxID, "port", route.Port, "status", status, "err", err)
	w.Header().Set("Cache-Control", "no-store")
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<!doctype html><title>%d %s</title><h1>%s</h1><p>%s</p>\n",
			status, http.StatusText(status), html.EscapeString(http.StatusText(status)), html.EscapeString(err.Error()))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"code": status, "message": err.Error()}
	if route.SandboxID != "" {
		body["sandboxId"] = route.SandboxID
		if !IsNotFound(err) {
			body["port"] = route.Port
		}
	}
	_ = json.NewEncoder(w).Encode(body)
}
