package agent

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	procpb "github.com/hearthsh/hearth/internal/gen/process"
)

// TestHostSocketSymlinkIsNotFollowed: root in the sandbox replaces envd's socket in the
// directory it shares with the host (/run/hearth) by a symlink to a host socket (as it could
// to /var/run/docker.sock). The agent proxies envd's port as root: none of its dials may
// reach that host socket, through commands, a pause (the stray-socket check and /freeze) or
// a resume (/thaw); envd's traffic takes the TCP address instead.
func TestHostSocketSymlinkIsNotFollowed(t *testing.T) {
	env := setupEnv(t)
	h := startAgent(t, env, t.TempDir())
	defer h.stop()
	h.create(t, "symlink-attack")

	// The host socket the sandbox is after: a tiny HTTP server that counts connections.
	dir, err := os.MkdirTemp("", "hsock")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	target := filepath.Join(dir, "host.sock")
	ln, err := net.Listen("unix", target)
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				reached.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	defer srv.Close()

	if out, code := h.run(t, "symlink-attack", "rm /run/hearth/envd.sock && ln -s "+target+" /run/hearth/envd.sock && ls -l /run/hearth/"); code != 0 || !strings.Contains(out, target) {
		t.Fatalf("replace envd's socket by a symlink: code %d: %s", code, out)
	}
	// Concurrent streams need new upstream connections: every one is a fresh dial.
	runAll := func(what string) {
		t.Helper()
		var wg sync.WaitGroup
		outs := make([]string, 4)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i] = runOut(h, "symlink-attack", "sleep 0.5; echo alive")
			}()
		}
		wg.Wait()
		for i, out := range outs {
			if out != "alive\n" {
				t.Errorf("%s: command %d through the proxy printed %q, want alive (over envd's TCP address)", what, i, out)
			}
		}
	}
	runAll("after the symlink")
	if n := reached.Load(); n != 0 {
		t.Fatalf("the agent connected %d times to the host socket the sandbox's symlink points at", n)
	}

	ctx := context.Background()
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "symlink-attack"})); err != nil {
		t.Fatalf("pause with a symlink in the socket dir: %v", err)
	}
	if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "symlink-attack"})); err != nil {
		t.Fatalf("resume: %v", err)
	}
	runAll("after pause and resume")
	if n := reached.Load(); n != 0 {
		t.Fatalf("the agent connected %d times to the host socket the sandbox's symlink points at", n)
	}
}

// runOut runs script through the proxy like harness.run, but reports a failure in its output
// instead of failing the test, so that it can run on other goroutines.
func runOut(h *harness, id, script string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := h.envd(id).Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}}))
	if err != nil {
		return "error: " + err.Error()
	}
	var out strings.Builder
	for stream.Receive() {
		out.Write(stream.Msg().GetEvent().GetData().GetStdout())
	}
	if err := stream.Err(); err != nil {
		return out.String() + "error: " + err.Error()
	}
	return out.String()
}
