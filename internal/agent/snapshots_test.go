package agent

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/auth"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	procpb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// TestSnapshots: a snapshot of a running sandbox is kept under the agent's data dir, survives
// the sandbox and an agent restart, starts several sandboxes with its files and processes,
// and can be deleted while sandboxes started from it keep working.
func TestSnapshots(t *testing.T) {
	env := setupEnv(t)
	dataDir := t.TempDir()
	h := startAgent(t, env, dataDir)
	ctx := context.Background()
	h.create(t, "snap-src")
	h.run(t, "snap-src", "echo from-source > /home/user/note; (i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.1; done) >/dev/null 2>&1 &")
	eventually(t, 10*time.Second, "counter written", func() bool { out, _ := h.run(t, "snap-src", "cat /tmp/c 2>/dev/null"); return out != "" })

	res, err := h.rpc.CreateSnapshot(ctx, connect.NewRequest(&pb.CreateSnapshotRequest{SandboxId: "snap-src", SnapshotId: "snap-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if sn := res.Msg.GetSnapshot(); sn.GetSourceSandboxId() != "snap-src" || sn.GetTemplate() != "base" || sn.GetSizeBytes() == 0 || sn.GetMemoryMib() != 512 {
		t.Fatalf("snapshot: %v", sn)
	}
	if h.state("snap-src") != pb.State_STATE_RUNNING {
		t.Fatalf("source after snapshot: %v", h.state("snap-src"))
	}
	if _, err := os.Stat(filepath.Join(dataDir, "sandboxes", ".snapshots", "snap-1", "snapshot.json")); err != nil {
		t.Fatalf("snapshot not under the data dir: %v", err)
	}
	if _, err := h.rpc.CreateSnapshot(ctx, connect.NewRequest(&pb.CreateSnapshotRequest{SandboxId: "snap-src", SnapshotId: "snap-1"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("second snapshot with the same ID: %v, want invalid_argument", err)
	}
	h.run(t, "snap-src", "echo changed > /home/user/note")
	if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: "snap-src"})); err != nil {
		t.Fatal(err)
	}

	// The snapshot survives the agent's restart.
	h.stop()
	h = startAgent(t, env, dataDir)
	defer h.stop()
	list, err := h.rpc.ListSnapshots(ctx, connect.NewRequest(&pb.ListSnapshotsRequest{}))
	if err != nil || len(list.Msg.GetSnapshots()) != 1 || list.Msg.GetSnapshots()[0].GetSnapshotId() != "snap-1" {
		t.Fatalf("snapshots after restart: %v, %v", list.Msg.GetSnapshots(), err)
	}

	for _, id := range []string{"snap-copy-a", "snap-copy-b"} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		res, err := h.rpc.Create(cctx, connect.NewRequest(&pb.CreateRequest{SandboxId: id, Cpus: 1, MemoryMib: 512, EnvdAccessToken: "tok-" + id, SnapshotId: "snap-1"}))
		cancel()
		if err != nil {
			t.Fatalf("create %s from snapshot: %v", id, err)
		}
		t.Cleanup(func() { h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})) })
		if res.Msg.GetSandbox().GetTemplate() != "base" {
			t.Fatalf("%s: template %q", id, res.Msg.GetSandbox().GetTemplate())
		}
	}
	// The copies' envd wants their own token, not the source's (none was set on it).
	for _, id := range []string{"snap-copy-a", "snap-copy-b"} {
		if out, _ := h.runToken(t, id, "tok-"+id, "cat /home/user/note"); out != "from-source\n" {
			t.Fatalf("%s: note %q", id, out)
		}
		a, _ := h.runToken(t, id, "tok-"+id, "cat /tmp/c")
		eventually(t, 10*time.Second, id+": copied counter advances", func() bool { b, _ := h.runToken(t, id, "tok-"+id, "cat /tmp/c"); return b != a })
	}

	// Deleting the snapshot leaves its sandboxes running, and they pause and resume.
	if _, err := h.rpc.DeleteSnapshot(ctx, connect.NewRequest(&pb.DeleteSnapshotRequest{SnapshotId: "snap-1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rpc.DeleteSnapshot(ctx, connect.NewRequest(&pb.DeleteSnapshotRequest{SnapshotId: "snap-1"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("delete again: %v, want not_found", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "sandboxes", ".snapshots", "snap-1")); !os.IsNotExist(err) {
		t.Fatalf("snapshot dir after delete: %v", err)
	}
	if _, err := h.rpc.Create(ctx, connect.NewRequest(&pb.CreateRequest{SandboxId: "snap-copy-c", Cpus: 1, MemoryMib: 512, SnapshotId: "snap-1"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("create from a deleted snapshot: %v, want not_found", err)
	}
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "snap-copy-a"})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "snap-copy-a"})); err != nil {
		t.Fatal(err)
	}
	if out, _ := h.runToken(t, "snap-copy-a", "tok-snap-copy-a", "cat /home/user/note"); out != "from-source\n" {
		t.Fatalf("after pause and resume: %q", out)
	}
}

// TestFilesystemOnlyPause: a pause that keeps only the disk releases the sandbox, and its
// resume boots a new kernel (new boot_id, no old processes) on the files as they were.
func TestFilesystemOnlyPause(t *testing.T) {
	env := setupEnv(t)
	dataDir := t.TempDir()
	h := startAgent(t, env, dataDir)
	defer h.stop()
	ctx := context.Background()
	h.create(t, "fspause")
	h.run(t, "fspause", "echo kept > /home/user/kept; mkdir -p /opt/x && echo root > /opt/x/f; rm /etc/motd; sleep 1000 >/dev/null 2>&1 &")
	boot, _ := h.run(t, "fspause", "cat /proc/sys/kernel/random/boot_id")
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "fspause", FilesystemOnly: true})); err != nil {
		t.Fatal(err)
	}
	if h.state("fspause") != pb.State_STATE_PAUSED {
		t.Fatalf("state after pause: %v", h.state("fspause"))
	}
	rt := filepath.Join(dataDir, "sandboxes", "fspause", "runtime")
	if _, err := os.Stat(filepath.Join(rt, "snapshot")); !os.IsNotExist(err) {
		t.Fatalf("a filesystem-only pause wrote a memory snapshot: %v", err)
	}
	// It survives an agent restart as a paused sandbox, also one killed between saving the
	// disk and recording the pause (the record still says pausing).
	h.stop()
	recPath := filepath.Join(dataDir, "sandboxes", "fspause", "sandbox.json")
	rec, err := os.ReadFile(recPath)
	if err != nil || !strings.Contains(string(rec), `"state": "paused"`) || !strings.Contains(string(rec), `"filesystemOnly": true`) {
		t.Fatalf("record of the paused sandbox: %s, %v", rec, err)
	}
	if err := os.WriteFile(recPath, []byte(strings.Replace(string(rec), `"state": "paused"`, `"state": "pausing"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h = startAgent(t, env, dataDir)
	defer h.stop()
	if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "fspause"})); err != nil {
		t.Fatal(err)
	}
	out, _ := h.run(t, "fspause", "cat /home/user/kept /opt/x/f; test -e /etc/motd && echo motd-back; cat /proc/sys/kernel/random/boot_id; pgrep -x sleep || echo no-sleep")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "kept" || lines[1] != "root" || lines[3] != "no-sleep" {
		t.Fatalf("after resume: %q", out)
	}
	if lines[2] == strings.TrimSpace(boot) {
		t.Fatalf("boot_id unchanged (%s): the sandbox was not booted afresh", lines[2])
	}
	// And pauses again as usual, memory and all.
	h.run(t, "fspause", "sleep 1000 >/dev/null 2>&1 &")
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "fspause"})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "fspause"})); err != nil {
		t.Fatal(err)
	}
	if out, _ := h.run(t, "fspause", "pgrep -x sleep >/dev/null && echo sleeping; cat /home/user/kept"); out != "sleeping\nkept\n" {
		t.Fatalf("after a memory pause: %q", out)
	}
}

// tokenTransport adds envd's access token to what headerTransport sends.
type tokenTransport struct{ id, token string }

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(auth.Header, t.token)
	return headerTransport{id: t.id}.RoundTrip(r)
}

// runToken is run for a sandbox whose envd requires an access token.
func (h *harness) runToken(t testing.TB, id, token, script string) (string, int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc := processconnect.NewProcessClient(&http.Client{Transport: tokenTransport{id: id, token: token}}, h.proxyURL, connect.WithProtoJSON())
	stream, err := pc.Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}}))
	if err != nil {
		t.Fatalf("run %q in %s: %v", script, id, err)
	}
	var out bytes.Buffer
	var code int32 = -100
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		out.Write(ev.GetData().GetStderr())
		if ev.GetEnd() != nil {
			code = ev.GetEnd().GetExitCode()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("run %q in %s: %v", script, id, err)
	}
	return out.String(), code
}
