package sandbox

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/envd"
)

// TestInitRetryAfterLostAnswer: envd applies the first /init (it sets the sandbox's token
// and agent secret) but its answer is lost in transport; the agent's retry, presenting the
// old credentials, is refused, and the agent must then present the new ones instead of
// failing the create (seen under load right after a restore).
func TestInitRetryAfterLostAnswer(t *testing.T) {
	real := envd.NewServer(envd.Config{DefaultUser: "root"})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/init" && calls.Add(1) == 1 {
			// envd handles it, then the connection dies before the answer arrives.
			real.ServeHTTP(httptest.NewRecorder(), r)
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		real.ServeHTTP(w, r)
	}))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	c := newEnvdClient(addr, "")
	defer c.close()
	token, secret := "tok-"+newEnvdSecret()[:8], newEnvdSecret()
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.init(ctx, envd.InitRequest{AccessToken: &token, Timestamp: &now, AgentSecret: secret}, "", "")
	if err != nil {
		t.Fatalf("init after a lost answer: %v", err)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("/init called %d times", n)
	}
	// The credentials envd holds are the new ones: a third /init with them passes.
	if err := c.init(ctx, envd.InitRequest{AccessToken: &token, AgentSecret: secret}, token, secret); err != nil {
		t.Fatalf("init with the new credentials: %v", err)
	}
}
