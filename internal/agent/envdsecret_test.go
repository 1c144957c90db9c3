package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/confine"
	"github.com/hearthsh/hearth/internal/envd/auth"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
)

// envdSecret reads the agent secret of sandbox id from its record.
func (h *harness) envdSecret(t *testing.T, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dataDir, "sandboxes", id, "sandbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		EnvdSecret string `json:"envdSecret"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || len(rec.EnvdSecret) != 64 {
		t.Fatalf("record of %s: secret %q, %v", id, rec.EnvdSecret, err)
	}
	return rec.EnvdSecret
}

// postEnvd sends POST path to envd at addr (the host's own route to the sandbox, not a
// proxy) with the agent secret secret, if any, and returns the status.
func postEnvd(t *testing.T, addr, path, secret string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader("{}"))
	if secret != "" {
		req.Header.Set(auth.AgentHeader, secret)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s at %s: %v", path, addr, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestEnvdInternalRoutesTakeOnlyTheAgentSecret: in a real sandbox, envd's /init, /freeze and
// /thaw refuse callers without the sandbox's own agent secret (another sandbox's included),
// through every proxy form and on envd's address itself; the secret survives pause and
// resume; a fork child takes its own and refuses its parent's.
func TestEnvdInternalRoutesTakeOnlyTheAgentSecret(t *testing.T) {
	env := setupEnv(t)
	h := startAgent(t, env, t.TempDir())
	defer h.stop()
	a := h.create(t, "secret-a")
	h.create(t, "secret-b")
	secretA, secretB := h.envdSecret(t, "secret-a"), h.envdSecret(t, "secret-b")
	if secretA == secretB {
		t.Fatal("two sandboxes got the same secret")
	}
	addr := a.GetEnvdAddress()
	for _, p := range []string{"/init", "/freeze", "/thaw", "/%66reeze", "/%74haw", "/%69nit"} {
		if code := postEnvd(t, addr, p, ""); code != http.StatusUnauthorized {
			t.Errorf("POST %s without the secret: %d, want 401", p, code)
		}
		if code := postEnvd(t, addr, p, secretB); code != http.StatusUnauthorized {
			t.Errorf("POST %s with another sandbox's secret: %d, want 401", p, code)
		}
		// Through the agent proxy, in the header form the SDKs use and the path form.
		for _, form := range []struct {
			u  string
			rt http.RoundTripper
		}{{h.proxyURL + p, headerTransport{id: "secret-a"}}, {h.proxyURL + "/proxy/secret-a/49983" + p, http.DefaultTransport}} {
			u := form.u
			req, _ := http.NewRequest("POST", u, strings.NewReader("{}"))
			res, err := form.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("POST %s through the proxy: %d, want 404", u, res.StatusCode)
			}
		}
	}
	if code := postEnvd(t, addr, "/thaw", secretA); code != http.StatusNoContent {
		t.Errorf("POST /thaw with the sandbox's secret: %d, want 204", code)
	}

	ctx := context.Background()
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "secret-a"})); err != nil {
		t.Fatalf("pause: %v", err)
	}
	res, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "secret-a"}))
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if out, _ := h.run(t, "secret-a", "echo back"); out != "back\n" {
		t.Fatalf("after resume: %q", out)
	}
	addr = res.Msg.GetSandbox().GetEnvdAddress()
	if code := postEnvd(t, addr, "/freeze", ""); code != http.StatusUnauthorized {
		t.Errorf("after resume, /freeze without the secret: %d, want 401", code)
	}

	fr, err := h.rpc.Fork(ctx, connect.NewRequest(&pb.ForkRequest{SandboxId: "secret-a", Children: []*pb.ForkChild{{SandboxId: "secret-a-child"}}}))
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	if r := fr.Msg.GetResults(); len(r) != 1 || r[0].GetError() != "" {
		t.Fatalf("fork results: %v", r)
	}
	t.Cleanup(func() {
		h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: "secret-a-child"}))
	})
	child := fr.Msg.GetResults()[0].GetSandbox()
	secretC := h.envdSecret(t, "secret-a-child")
	// The driver thawed the child with its parent's secret, which the copy held: its host
	// socket serves.
	sock := filepath.Join(h.dataDir, "sandboxes", "secret-a-child", "runtime", "envd", "envd.sock")
	uc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return confine.Dial(ctx, nil, sock) }}}
	if res, err := uc.Get("http://envd/health"); err != nil {
		t.Errorf("fork child's host socket: %v", err)
	} else {
		res.Body.Close()
	}
	if code := postEnvd(t, child.GetEnvdAddress(), "/thaw", secretA); code != http.StatusUnauthorized {
		t.Errorf("fork child's /thaw with the parent's secret: %d, want 401", code)
	}
	if code := postEnvd(t, child.GetEnvdAddress(), "/thaw", secretC); code != http.StatusNoContent {
		t.Errorf("fork child's /thaw with its own secret: %d, want 204", code)
	}
	if code := postEnvd(t, addr, "/thaw", secretA); code != http.StatusNoContent {
		t.Errorf("parent's /thaw with its secret after the fork: %d, want 204", code)
	}
	if out, _ := h.run(t, "secret-a-child", "echo child"); out != "child\n" {
		t.Fatalf("fork child: %q", out)
	}
}
