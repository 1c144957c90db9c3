package egressproxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Names the test resolver knows; all resolve to loopback. evil.test is in the upstream's
// certificate and resolvable, so only the policy keeps it out.
var testNames = map[string]bool{"api.example.com": true, "www.allowed.test": true, "evil.test": true, "unresolvable.allowed.test": false}

var testPolicy = []string{"api.example.com", "*.allowed.test"}

// testCert makes a self-signed certificate for the test names.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "egressproxy test"},
		DNSNames:              []string{"api.example.com", "www.allowed.test", "evil.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// upstreams starts a TLS and a plain HTTP server that report what they were asked.
func upstreams(t *testing.T) (map[uint16]string, *x509.CertPool) {
	cert, pool := testCert(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		fmt.Fprintf(w, "upstream: host=%s sni=%s path=%s", r.Host, sni, r.URL.Path)
	})
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return map[uint16]string{443: ts.Listener.Addr().String(), 80: hs.Listener.Addr().String()}, pool
}

// syncBuffer collects the proxy's log for assertions and failure output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testProxy struct {
	srv      *Server
	addr     string
	dials    atomic.Int32
	logs     syncBuffer
	serveErr chan error
}

func fixedDst(port uint16) func(net.Conn) (netip.AddrPort, error) {
	return func(net.Conn) (netip.AddrPort, error) {
		return netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port), nil
	}
}

// startProxy runs a Server on loopback whose Dial sends "address:443" and "address:80"
// to the test upstreams' real ports, keeping the address the proxy resolved. mod adjusts
// the config before New.
func startProxy(t *testing.T, ups map[uint16]string, mod func(*Config)) *testProxy {
	t.Helper()
	p := &testProxy{serveErr: make(chan error, 1)}
	cfg := Config{
		Lookup: func(src netip.Addr) ([]string, bool) {
			return testPolicy, src == netip.MustParseAddr("127.0.0.1")
		},
		OriginalDst: fixedDst(443),
		Resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
			if testNames[host] {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, fmt.Errorf("lookup %s: no such host", host)
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			p.dials.Add(1)
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			real, ok := ups[ap.Port()]
			if !ok {
				return nil, fmt.Errorf("no test upstream for port %d", ap.Port())
			}
			_, port, _ := net.SplitHostPort(real)
			var d net.Dialer
			return d.DialContext(ctx, network, net.JoinHostPort(ap.Addr().String(), port))
		},
		HandshakeTimeout: 2 * time.Second,
		Log:              slog.New(slog.NewTextHandler(&p.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv, p.addr = srv, ln.Addr().String()
	go func() { p.serveErr <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-p.serveErr:
			if err != nil {
				t.Errorf("Serve after Close = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.logs.String())
		}
	})
	return p
}

// client is an HTTP client whose every connection goes to the proxy, as the nftables
// redirect would send it.
func (p *testProxy) client(pool *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", p.addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
		},
	}
}

func (p *testProxy) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// expectClosed waits for the proxy to end c, failing on data or on a timeout.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(make([]byte, 1024))
	if n > 0 {
		t.Fatalf("got %d bytes, want the connection closed", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	if err == nil {
		t.Fatal("read returned no error and no data")
	}
}

func TestProxyHTTPS(t *testing.T) {
	ups, pool := upstreams(t)
	tests := []struct {
		name      string
		url       string
		want      string // response body; "" means the request must fail
		wantDials int32
	}{
		{"allowed exact name", "https://api.example.com/v1/models", "upstream: host=api.example.com sni=api.example.com path=/v1/models", 1},
		{"allowed by wildcard", "https://www.allowed.test/x", "upstream: host=www.allowed.test sni=www.allowed.test path=/x", 1},
		{"not in allowOut", "https://evil.test/", "", 0},
		{"allowed but unresolvable", "https://unresolvable.allowed.test/", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, ups, nil)
			resp, err := p.client(pool).Get(tt.url)
			if tt.want == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request went through with status %s", resp.Status)
				}
			} else {
				if err != nil {
					t.Fatalf("GET %s: %v", tt.url, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != tt.want {
					t.Fatalf("body %q, %v; want %q", body, err, tt.want)
				}
			}
			if got := p.dials.Load(); got != tt.wantDials {
				t.Errorf("upstream dialled %d times, want %d", got, tt.wantDials)
			}
		})
	}
}

func TestProxyHTTP(t *testing.T) {
	ups, _ := upstreams(t)
	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantBody   string // substring
		wantDials  int32
	}{
		{"allowed", "http://api.example.com/v1", 200, "upstream: host=api.example.com sni= path=/v1", 1},
		{"allowed by wildcard with port", "http://www.allowed.test:80/", 200, "host=www.allowed.test", 1},
		{"not in allowOut", "http://evil.test/", 403, `"evil.test" is not in this sandbox's allowOut`, 0},
		{"parent of a wildcard", "http://allowed.test/", 403, "allowOut", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, ups, func(c *Config) { c.OriginalDst = fixedDst(80) })
			resp, err := p.client(nil).Get(tt.url)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.url, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("got %s %q; want %d with %q", resp.Status, body, tt.wantStatus, tt.wantBody)
			}
			if got := p.dials.Load(); got != tt.wantDials {
				t.Errorf("upstream dialled %d times, want %d", got, tt.wantDials)
			}
		})
	}
}

// Connections the proxy must refuse before it dials anything, probed with a TLS
// handshake for a name the policy allows (so only the rule under test can stop it).
func TestProxyRefuses(t *testing.T) {
	ups, pool := upstreams(t)
	var listenerAddr func(net.Conn) (netip.AddrPort, error) = func(c net.Conn) (netip.AddrPort, error) {
		return netip.ParseAddrPort(c.LocalAddr().String())
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantLog string
	}{
		{"control: allowed", nil, "relaying"},
		{"unknown source", func(c *Config) {
			c.Lookup = func(netip.Addr) ([]string, bool) { return testPolicy, false }
		}, "not a sandbox"},
		{"original port 22", func(c *Config) { c.OriginalDst = fixedDst(22) }, "only ports 80 and 443"},
		{"original destination is the listener", func(c *Config) { c.OriginalDst = listenerAddr }, "directly"},
		{"original destination unknown", func(c *Config) {
			c.OriginalDst = func(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("no conntrack entry") }
		}, "original destination unknown"},
		{"resolved address not allowed", func(c *Config) {
			c.Allowed = func(a netip.Addr) bool { return !a.IsLoopback() }
		}, "may be dialled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, ups, tt.mod)
			c := p.dial(t)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			tc := tls.Client(c, &tls.Config{ServerName: "api.example.com", RootCAs: pool})
			err := tc.Handshake()
			control := tt.mod == nil
			if control != (err == nil) {
				t.Fatalf("handshake error %v; want success only for the control case", err)
			}
			if want := map[bool]int32{true: 1, false: 0}[control]; p.dials.Load() != want {
				t.Errorf("upstream dialled %d times, want %d", p.dials.Load(), want)
			}
			// The log tells which rule fired; wait for the handler to write it.
			deadline := time.Now().Add(2 * time.Second)
			for !strings.Contains(p.logs.String(), tt.wantLog) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(p.logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q", tt.wantLog)
			}
		})
	}
}

func TestProxyHandshakeTimeout(t *testing.T) {
	ups, _ := upstreams(t)
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name string
		port uint16
		send string
	}{
		{"TLS, nothing sent", 443, ""},
		{"TLS, partial record", 443, "\x16\x03\x01\x02\x00\x01"},
		{"HTTP, nothing sent", 80, ""},
		{"HTTP, partial head", 80, "GET / HTTP/1.1\r\nHost: api.exa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, ups, func(c *Config) {
				c.OriginalDst = fixedDst(tt.port)
				c.HandshakeTimeout = timeout
			})
			c := p.dial(t)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			expectClosed(t, c, 5*time.Second)
			if took := time.Since(start); took < timeout*3/4 || took > 3*time.Second {
				t.Errorf("closed after %v, want about %v", took, timeout)
			}
			if p.dials.Load() != 0 {
				t.Error("upstream dialled")
			}
		})
	}
}

// echoUpstream accepts connections, reads each to EOF (which comes only if the proxy
// passed on the client's half-close) and sends everything back.
func echoUpstream(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	return startUpstream(t, func(c net.Conn) {
		data, err := io.ReadAll(c)
		if err == nil {
			_, _ = c.Write(data)
		}
	})
}

// startUpstream accepts connections on loopback and runs serve on each, signalling every
// accept on the returned channel.
func startUpstream(t *testing.T, serve func(net.Conn)) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acc := make(chan struct{}, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			acc <- struct{}{}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c)
			})
		}
	})
	return ln.Addr().String(), acc
}

// The upstream receives exactly the client's bytes, however they were split, including
// what the proxy read ahead; half-closes pass through both ways.
func TestProxyReplayAndHalfClose(t *testing.T) {
	hello := captureClientHello(t, &tls.Config{ServerName: "www.allowed.test"})
	tests := []struct {
		name   string
		port   uint16
		chunks []string
	}{
		{"HTTP head in pieces with body", 80, []string{"POST /up HTTP/1.1\r\nHo", "st: api.example.com\r\nContent-Length: 11\r\n", "\r\nhello", " world", strings.Repeat("more after the body ", 500)}},
		{"HTTP pipelined", 80, []string{"GET /1 HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET /2 HTTP/1.1\r\nHost: evil.test\r\n\r\n"}},
		{"TLS hello in pieces", 443, []string{string(hello[:3]), string(hello[3:100]), string(hello[100:]), "\x14\x03\x03\x00\x01\x01"}},
		{"TLS hello over records", 443, []string{string(refragment(hello, 50)), "application data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo, _ := echoUpstream(t)
			p := startProxy(t, map[uint16]string{tt.port: echo}, func(c *Config) { c.OriginalDst = fixedDst(tt.port) })
			c := p.dial(t)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			var sent bytes.Buffer
			for _, ch := range tt.chunks {
				if _, err := io.WriteString(c, ch); err != nil {
					t.Fatal(err)
				}
				sent.WriteString(ch)
				time.Sleep(20 * time.Millisecond) // let the proxy see each piece on its own
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if !bytes.Equal(got, sent.Bytes()) {
				t.Fatalf("upstream got %d bytes that differ from the %d sent", len(got), sent.Len())
			}
		})
	}
}

func TestCloseEndsConnections(t *testing.T) {
	echo, accepted := echoUpstream(t)
	p := startProxy(t, map[uint16]string{80: echo}, func(c *Config) { c.OriginalDst = fixedDst(80) })

	relayed := p.dial(t)
	if _, err := io.WriteString(relayed, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never dialled")
	}
	waiting := p.dial(t) // still in the handshake phase: sends nothing

	closed := make(chan error, 1)
	go func() { closed <- p.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case err := <-p.serveErr:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
		p.serveErr <- nil // for the cleanup's check
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	expectClosed(t, relayed, time.Second)
	expectClosed(t, waiting, time.Second)
	if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after Close")
	}
}

func TestServeListenerClosedElsewhere(t *testing.T) {
	srv, err := New(Config{Lookup: func(netip.Addr) ([]string, bool) { return nil, false }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	ln.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve = %v, want net.ErrClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Serve on a closed server returns at once.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln2); err != nil {
		t.Fatalf("Serve after Close = %v", err)
	}
	if _, err := ln2.Accept(); err == nil {
		t.Fatal("Serve after Close left the listener open")
	}
}

func TestNewNeedsLookup(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Lookup succeeded")
	}
}

// TestCloseFrom: a sandbox's relayed connections end when the agent says its policy
// changed; other sources' connections and the server itself carry on.
func TestCloseFrom(t *testing.T) {
	// An upstream that echoes as it reads, unlike echoUpstream which waits for EOF.
	echo, accepted := startUpstream(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := startProxy(t, map[uint16]string{80: echo}, func(c *Config) { c.OriginalDst = fixedDst(80) })
	c := p.dial(t)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	head := "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never dialled")
	}
	if _, err := io.ReadFull(c, make([]byte, len(head))); err != nil {
		t.Fatalf("echo before CloseFrom: %v", err)
	}
	if n := p.srv.CloseFrom(netip.MustParseAddr("127.0.0.2")); n != 0 {
		t.Fatalf("CloseFrom another source closed %d connections", n)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("connection broken by CloseFrom of another source: %v", err)
	}
	if n := p.srv.CloseFrom(netip.MustParseAddr("127.0.0.1")); n != 1 {
		t.Fatalf("CloseFrom closed %d connections, want 1", n)
	}
	expectClosed(t, c, time.Second)
	// The server still relays new connections.
	again := p.dial(t)
	_ = again.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(again, head); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(again, make([]byte, len(head))); err != nil {
		t.Fatalf("new connection after CloseFrom: %v", err)
	}
}
