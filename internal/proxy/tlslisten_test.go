package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/tlsca"
)

// TestTLSAndPlainOnOnePort: one proxy port serves https://PORT-ID.<domain> (what the SDKs'
// getHost builds, the client's server name chosen by the host) with a leaf of the dev CA,
// and plain HTTP alike; the route comes from the host either way, and the upstream hears
// the scheme the client used. A client that sends nothing delays no one.
func TestTLSAndPlainOnOnePort(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s proto=%s", r.Header.Get("X-Sandbox"), r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(upstream.Close)
	h := New(func(r *http.Request, route Route) (Upstream, error) {
		hdr := http.Header{}
		hdr.Set("X-Sandbox", fmt.Sprintf("%s:%d", route.SandboxID, route.Port))
		return Upstream{Addr: strings.TrimPrefix(upstream.URL, "http://"), Header: hdr}, nil
	}, Options{Domain: "hearth.localhost:3443"})

	ca, _, err := tlsca.LoadOrCreate(t.TempDir(), "hearth.localhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := tlsca.NewIssuer(ca, "hearth.localhost")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := ServeTLSAndPlain(raw, tlsca.ServerConfig(issuer), 300*time.Millisecond)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := raw.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	// A silent connection, open during all the requests below.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	dialLoopback := func(network, _ string) (net.Conn, error) { return net.Dial(network, addr) }
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial:            dialLoopback, // *.hearth.localhost is loopback, as browsers resolve it
	}}
	tests := []struct {
		name, url, want string
		wantErr         string
	}{
		{name: "https host route", url: "https://8000-sbxa.hearth.localhost:" + port + "/dir/", want: "sbxa:8000 /dir/ proto=https"},
		{name: "https envd host", url: "https://49983-sbxb.hearth.localhost:" + port + "/health", want: "sbxb:49983 /health proto=https"},
		{name: "plain host route", url: "http://8000-sbxa.hearth.localhost:" + port + "/", want: "sbxa:8000 / proto=http"},
		{name: "https path route via localhost", url: "https://localhost:" + port + "/proxy/sbxc/3000/x", want: "sbxc:3000 /x proto=https"},
		{name: "https other domain: the certificate does not cover it", url: "https://8000-sbxa.example.com:" + port + "/",
			wantErr: "certificate is valid for *.hearth.localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := client.Get(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != tt.want {
				t.Fatalf("got %q, want %q", b, tt.want)
			}
			if strings.HasPrefix(tt.url, "https") && (res.TLS == nil || res.TLS.NegotiatedProtocol == "h2") {
				t.Fatalf("TLS state %+v: want HTTP/1.1 over TLS", res.TLS)
			}
		})
	}
	// The silent client is cut after the first-byte timeout.
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent connection: %v, want closed by the proxy", err)
	}
}
