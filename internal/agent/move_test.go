package agent

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	"github.com/hearthsh/hearth/internal/artifacts"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/runtimetest"
)

// Two agents acting as two hosts: their own slot prefixes, pools and cgroups, data dirs, and
// one artifacts store between them.
var (
	moveNetK = agentNet{"hartk", netip.MustParsePrefix("10.252.0.0/16"), "hearth-art-k"}
	moveNetL = agentNet{"hartl", netip.MustParsePrefix("10.253.0.0/16"), "hearth-art-l"}
)

// TestPausedSandboxMovesHost: a sandbox paused on one agent resumes on another that shares
// its artifacts store, in another slot of another pool, with the files it wrote and the
// processes it ran; it moves back the same way, replacing the older copy the first agent
// kept. A host without the template build the snapshot needs refuses it and keeps nothing.
func TestPausedSandboxMovesHost(t *testing.T) {
	env := setupEnv(t)
	dir, err := artifacts.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		store artifacts.Store
	}{{"directory", dir}, {"s3", s3Store(t)}} {
		t.Run(tc.name, func(t *testing.T) { testMove(t, env, tc.store) })
	}
}

// s3Store is an artifacts store in an in-process S3 server (gofakes3) on loopback.
func s3Store(t *testing.T) artifacts.Store {
	be := s3mem.New()
	if err := be.CreateBucket("hearth"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be, gofakes3.WithIntegrityCheck(true)).Server())
	t.Cleanup(srv.Close)
	cfg, err := artifacts.ParseS3URL("s3://hearth/paused?region=us-east-1&endpoint=" + srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Creds = credentials.NewStaticV4("test-key", "test-secret", "")
	s, err := artifacts.NewS3(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testMove(t *testing.T, env *runtimetest.Env, store artifacts.Store) {
	var otherBuild atomic.Bool
	withStore := func(c *sandbox.Config) { c.Artifacts = store }
	a := startAgentOn(t, env, t.TempDir(), moveNetK, withStore)
	defer a.stop()
	b := startAgentOn(t, env, t.TempDir(), moveNetL, withStore, func(c *sandbox.Config) {
		c.Templates = func(name string) (runtime.Template, error) {
			tpl := env.Template
			if otherBuild.Load() {
				tpl.Version = "another-build"
			}
			return tpl, nil
		}
	})
	defer b.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const id = "moving"
	a.create(t, id)
	a.run(t, id, "echo 'written on k' > /home/user/moved.txt")
	pidOut, _ := a.run(t, id, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
	pid := strings.TrimSpace(pidOut)
	start := time.Now()
	paused, err := a.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: id}))
	if err != nil {
		t.Fatal(err)
	}
	manifest := paused.Msg.GetSandbox().GetSnapshotManifest()
	if manifest == "" {
		t.Fatal("pause with an artifacts store reported no snapshot manifest")
	}
	t.Logf("pause with upload: %v", time.Since(start))

	otherBuild.Store(true)
	_, err = b.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id, SnapshotManifest: manifest}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "another-build") {
		t.Fatalf("resume on a host with another template build: %v, want FAILED_PRECONDITION naming the builds", err)
	}
	if st := b.state(id); st != pb.State_STATE_UNSPECIFIED {
		t.Fatalf("refused import left sandbox %s on the other host", st)
	}
	otherBuild.Store(false)

	a.stop() // the first host is gone; its copy stays paused on its disk
	start = time.Now()
	res, err := b.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id, SnapshotManifest: manifest}))
	if err != nil {
		t.Fatalf("resume on the other host: %v", err)
	}
	t.Logf("fetch and resume on the other host: %v", time.Since(start))
	addr := netip.MustParseAddrPort(res.Msg.GetSandbox().GetEnvdAddress()).Addr()
	if !moveNetL.pool.Contains(addr) {
		t.Fatalf("resumed sandbox at %s, outside the second host's pool %s", addr, moveNetL.pool)
	}
	if out, _ := b.run(t, id, "cat /home/user/moved.txt"); out != "written on k\n" {
		t.Fatalf("file after the move: %q", out)
	}
	if out, code := b.run(t, id, sleeperCheck(pid)); code != 0 || out != "sleep 600\n" {
		t.Fatalf("process %s after the move: %q (exit %d)", pid, out, code)
	}

	// And back: the first host (restarted over its data dir) still holds its older copy,
	// which the newer manifest replaces.
	b.run(t, id, "echo 'written on l' > /home/user/moved.txt")
	paused, err = b.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: id}))
	if err != nil {
		t.Fatal(err)
	}
	back := paused.Msg.GetSandbox().GetSnapshotManifest()
	if back == "" || back == manifest {
		t.Fatalf("second pause manifest %q (first %q)", back, manifest)
	}
	a = startAgentOn(t, env, a.dataDir, moveNetK, withStore)
	defer a.stop()
	if st := a.state(id); st != pb.State_STATE_PAUSED {
		t.Fatalf("first host's older copy is %s, want paused", st)
	}
	if _, err := a.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id, SnapshotManifest: back})); err != nil {
		t.Fatalf("resume back on the first host: %v", err)
	}
	if out, _ := a.run(t, id, "cat /home/user/moved.txt"); out != "written on l\n" {
		t.Fatalf("file after moving back: %q (the older copy was resumed)", out)
	}
	if out, code := a.run(t, id, sleeperCheck(pid)); code != 0 || out != "sleep 600\n" {
		t.Fatalf("process %s after moving back: %q (exit %d)", pid, out, code)
	}
	// A filesystem-only pause moves too: the files, not the processes (a fresh boot).
	a.run(t, id, "echo 'disk only' > /home/user/moved.txt")
	paused, err = a.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: id, FilesystemOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id, SnapshotManifest: paused.Msg.GetSandbox().GetSnapshotManifest()})); err != nil {
		t.Fatalf("resume a filesystem-only pause on the other host: %v", err)
	}
	if out, _ := b.run(t, id, "cat /home/user/moved.txt"); out != "disk only\n" {
		t.Fatalf("file after a filesystem-only move: %q", out)
	}
	if out, _ := b.run(t, id, sleeperCheck(pid)); out == "sleep 600\n" {
		t.Fatalf("process %s survived a filesystem-only pause", pid)
	}
	for _, h := range []*harness{a, b} {
		if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id})); err != nil {
			t.Errorf("destroy: %v", err)
		}
	}
	assertNoLeftoversOf(t, moveNetK.prefix, moveNetK.cgroupParent)
	assertNoLeftoversOf(t, moveNetL.prefix, moveNetL.cgroupParent)
}

// sleeperCheck prints the command line of process pid ("sleep 600" for the test's sleeper),
// which a fresh boot's process of the same pid does not have.
func sleeperCheck(pid string) string {
	return "tr '\\0' ' ' < /proc/" + pid + "/cmdline | sed 's/ $//'; echo"
}

// TestManifestCannotEscape: a manifest (the store is written by other hosts) naming a file
// outside the paused-state dirs is refused before anything is written.
func TestManifestCannotEscape(t *testing.T) {
	env := setupEnv(t)
	store, err := artifacts.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	h := startAgentOn(t, env, dataDir, moveNetK, func(c *sandbox.Config) { c.Artifacts = store })
	defer h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file, _ := artifacts.PutBytes(ctx, store, []byte(`{"id":"evil"}`))
	for _, path := range []string{"sandbox.json", "runtime/snapshot/../../sandbox.json", "../evil/x", "/etc/x", "runtime/bundle/config.json"} {
		man, _ := json.Marshal(map[string]any{
			"kind": "hearth.paused-sandbox.v1", "templateVersion": env.Template.Version,
			"record": map[string]any{"id": "evil", "template": "base", "state": "paused", "cpus": 1, "memoryMiB": 256},
			"files":  []map[string]any{{"path": path, "digest": file, "size": 13, "mode": 0o600}},
		})
		d, err := artifacts.PutBytes(ctx, store, man)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "evil", SnapshotManifest: string(d)}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("manifest with file %q: %v, want INVALID_ARGUMENT", path, err)
		}
		if m, _ := filepath.Glob(filepath.Join(dataDir, "sandboxes", "*")); len(m) != 0 {
			t.Errorf("manifest with file %q left %v", path, m)
		}
	}
}
