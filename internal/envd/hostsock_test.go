package envd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/identity"
)

// unixClient sends every request to the Unix socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func status(t *testing.T, c *http.Client, method, u string, hdr http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestHostSocketFreezeThaw covers what the gVisor driver relies on around a checkpoint: the
// socket serves envd's routes (token included), /freeze over TCP closes it and cuts what was
// accepted on it, /freeze over the socket itself is refused, and /thaw serves it again over a
// stale socket file.
func TestHostSocketFreezeThaw(t *testing.T) {
	cur, err := identity.Current()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "envd.sock")
	s := NewServer(Config{Log: slog.New(slog.DiscardHandler), DefaultUser: cur.Name, HostSocket: sock})
	t.Cleanup(s.Close)
	tcp := httptest.NewServer(s)
	t.Cleanup(tcp.Close)
	if err := s.OpenHostSocket(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.sock.close() })
	s.env.SetAccessToken("secret")
	uc := unixClient(sock)
	withToken := http.Header{auth.Header: {"secret"}}

	if code, body := status(t, uc, "GET", "http://envd/envs", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /envs over the socket without token = %d %s, want 401", code, body)
	}
	if code, body := status(t, uc, "GET", "http://envd/envs", withToken); code != http.StatusOK {
		t.Fatalf("GET /envs over the socket = %d %s, want 200", code, body)
	}
	if code, body := status(t, uc, "POST", "http://envd/freeze", nil); code != http.StatusConflict || !strings.Contains(body, "TCP") {
		t.Errorf("POST /freeze over the socket = %d %s, want 409 naming TCP", code, body)
	}

	// A connection accepted before the freeze must not survive it: a checkpoint would meet it.
	held, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("GET /health HTTP/1.1\r\nHost: envd\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := held.Read(buf); err != nil {
		t.Fatalf("read from a held connection: %v", err)
	}

	if code, body := status(t, http.DefaultClient, "POST", tcp.URL+"/freeze", nil); code != http.StatusNoContent {
		t.Fatalf("POST /freeze over TCP without token = %d %s, want 204", code, body)
	}
	if code, _ := status(t, uc, "GET", "http://envd/health", nil); code != 0 {
		t.Errorf("socket still answers after /freeze (status %d)", code)
	}
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(buf); err == nil {
		t.Errorf("a connection accepted before /freeze is still open")
	}
	// A socket file nobody listens on, as a crash would leave: /thaw must replace it.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	if code, body := status(t, http.DefaultClient, "POST", tcp.URL+"/freeze", nil); code != http.StatusNoContent {
		t.Errorf("second /freeze = %d %s, want 204", code, body)
	}

	for i := 0; i < 2; i++ { // thaw twice: the second is a no-op
		if code, body := status(t, http.DefaultClient, "POST", tcp.URL+"/thaw", nil); code != http.StatusNoContent {
			t.Fatalf("POST /thaw = %d %s, want 204", code, body)
		}
	}
	if code, body := status(t, uc, "GET", "http://envd/envs", withToken); code != http.StatusOK {
		t.Errorf("GET /envs over the socket after /thaw = %d %s, want 200", code, body)
	}
}

// TestNoHostSocket: without one configured, /freeze and /thaw do nothing and succeed, so a
// driver can send them to any envd.
func TestNoHostSocket(t *testing.T) {
	_, hs := newTestServer(t)
	for _, p := range []string{"/freeze", "/thaw"} {
		if code, body := status(t, http.DefaultClient, "POST", hs.URL+p, nil); code != http.StatusNoContent {
			t.Errorf("POST %s = %d %s, want 204", p, code, body)
		}
	}
}
