package web

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// envdDialer reaches sandboxes' envd through the control plane's sandbox proxy without a
// socket: an http.Server serves the proxy handler on an in-memory listener, and the Go SDK's
// HTTP client dials that listener. The proxy then routes, auto-resumes and ends streams on
// pause exactly as for any SDK client.
type envdDialer struct {
	proxy http.Handler
	once  sync.Once
	// client is made on first use, so a handler that never opens a terminal or a file (most
	// control planes in tests) runs no server goroutine.
	client *hearth.Client
}

func newEnvdDialer(proxyHandler http.Handler) *envdDialer { return &envdDialer{proxy: proxyHandler} }

func (d *envdDialer) start() {
	ln := newMemListener()
	srv := &http.Server{Handler: d.proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // lives as long as the process, like the control plane's
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return ln.dial(ctx) },
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	d.client = hearth.NewClient(
		hearth.WithAPIURL("http://hearth-api.invalid"), // never used: the dashboard reads the API in-process
		hearth.WithSandboxURL("http://hearth-proxy.internal"),
		hearth.WithAPIKey(""),
		hearth.WithHTTPClient(&http.Client{Transport: tr}),
	)
}

// sandbox returns an SDK handle on a sandbox's envd.
func (d *envdDialer) sandbox(id, token string) *hearth.Sandbox {
	d.once.Do(d.start)
	return d.client.Attach(id, token)
}

// memListener is a net.Listener whose connections are in-memory pipes.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "dashboard" }

func pathEscape(s string) string { return url.PathEscape(s) }
