package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSDKDomain(t *testing.T) {
	addr := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	tests := []struct {
		domain  string
		addPort bool
		proxy   string
		want    string
	}{
		{"hearth.localhost", true, "127.0.0.1:3002", "hearth.localhost:3002"},
		{"hearth.localhost", true, "127.0.0.1:443", "hearth.localhost"},
		{"hearth.localhost:8443", true, "127.0.0.1:3002", "hearth.localhost:8443"}, // told as given
		{"sandboxes.example.com", false, "0.0.0.0:3002", "sandboxes.example.com"},  // hearth server
		{"", true, "127.0.0.1:3002", ""},
	}
	for _, tt := range tests {
		if got := sdkDomain(tt.domain, tt.addPort, addr(tt.proxy)); got != tt.want {
			t.Errorf("sdkDomain(%q, %v, %s) = %q, want %q", tt.domain, tt.addPort, tt.proxy, got, tt.want)
		}
	}
}

func TestSetupProxyTLS(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     proxyTLSConfig
		domain  string
		wantErr string
		wantCA  bool
		off     bool
	}{
		{name: "off", cfg: proxyTLSConfig{}, domain: "hearth.localhost", off: true},
		{name: "generated CA, domain with a port", cfg: proxyTLSConfig{On: true}, domain: "hearth.localhost:3002", wantCA: true},
		{name: "no domain", cfg: proxyTLSConfig{On: true}, domain: "", wantErr: "needs --domain"},
		{name: "cert without key", cfg: proxyTLSConfig{CertFile: "c.pem"}, domain: "x.test", wantErr: "go together"},
		{name: "missing cert files", cfg: proxyTLSConfig{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: filepath.Join(dir, "nope-key.pem")},
			domain: "x.test", wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := setupProxyTLS(tt.cfg, dir, tt.domain)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.off != (got == nil) {
				t.Fatalf("got %+v, want off=%v", got, tt.off)
			}
			if tt.wantCA {
				if got.CA == nil || got.CA.CertPath != filepath.Join(dir, "tls", "hearth.localhost", "ca.pem") {
					t.Fatalf("CA %+v", got.CA)
				}
				if _, err := os.Stat(got.CA.CertPath); err != nil {
					t.Fatal(err)
				}
				if b := tlsBanner(got, tt.domain); !strings.Contains(b, "export NODE_EXTRA_CA_CERTS="+got.CA.CertPath) ||
					!strings.Contains(b, "https://PORT-ID.hearth.localhost:3002/") {
					t.Fatalf("banner:\n%s", b)
				}
			}
		})
	}
}

// TestControlPlaneServesTLS: `hearth server --tls --domain D` (and so hearth dev) serves
// https://PORT-ID.D on the proxy port with a certificate from the generated CA, and plain
// HTTP on the same port; both route by host (here to a sandbox that does not exist).
func TestControlPlaneServesTLS(t *testing.T) {
	dir := t.TempDir()
	c := serverConfig{DataDir: dir, APIAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0", Domain: "hearth.localhost",
		AgentToken: "t", TLS: proxyTLSConfig{On: true, AddPort: true}}
	st, err := openStore(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	type up struct {
		proxy  net.Addr
		domain string
		tls    *proxyTLS
	}
	ready := make(chan up, 1)
	done := make(chan error, 1)
	go func() {
		done <- runControlPlane(ctx, c, st, slog.New(slog.DiscardHandler), func(_, proxy net.Addr, domain string, ptls *proxyTLS) {
			ready <- up{proxy, domain, ptls}
		})
	}()
	defer func() { cancel(); <-done }()
	var u up
	select {
	case u = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.proxy.String())
	if u.domain != "hearth.localhost:"+port {
		t.Fatalf("domain told to SDKs %q, want hearth.localhost:%s", u.domain, port)
	}
	roots := x509.NewCertPool()
	roots.AddCert(u.tls.CA.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial:            func(network, _ string) (net.Conn, error) { return net.Dial(network, u.proxy.String()) },
	}}
	for _, scheme := range []string{"https", "http"} {
		res, err := client.Get(scheme + "://8000-nosuchsandbox." + u.domain + "/")
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), `"sandboxId":"nosuchsandbox"`) {
			t.Fatalf("%s: %d %s", scheme, res.StatusCode, b)
		}
		if (res.TLS != nil) != (scheme == "https") {
			t.Fatalf("%s: TLS state %v", scheme, res.TLS)
		}
	}
}
