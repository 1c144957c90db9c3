package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/template"
)

// TestDeleteTemplate: a template version a sandbox on this host uses (running or paused) is
// refused; an unused one is removed, and removing it again is a no-op.
func TestDeleteTemplate(t *testing.T) {
	env := setupEnv(t)
	h := startAgent(t, env, t.TempDir())
	t.Cleanup(h.stop)
	h.agent.EnableTemplateBuilds(h.dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	del := func(name string) (*pb.DeleteTemplateResponse, error) {
		res, err := h.rpc.DeleteTemplate(ctx, connect.NewRequest(&pb.DeleteTemplateRequest{Template: name}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}

	h.create(t, "uses-base")
	defer h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: "uses-base"}))
	if _, err := del("base"); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("delete a template a running sandbox uses: %v, want failed_precondition", err)
	}
	if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "uses-base"})); err != nil {
		t.Fatal(err)
	}
	if _, err := del("base"); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("delete a template a paused sandbox uses: %v, want failed_precondition", err)
	}

	name := "tpl00000000000000001-6b3f0d6e-0000-4000-8000-000000000001"
	dir := template.Dir(h.dataDir, name)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(template.Meta{Name: name, BuildID: "b1"})
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	// The runtime's snapshot of the version's started sandbox (a build with a start
	// command makes one) and its lock.
	snaps := filepath.Join(h.dataDir, "template-snapshots")
	img := filepath.Join(snaps, name, name+"-0123456789ab")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(img, "checkpoint.img"), filepath.Join(snaps, name+".lock")} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, baseSnaps := os.Stat(filepath.Join(snaps, "base"))
	if res, err := del(name); err != nil || !res.GetDeleted() {
		t.Fatalf("delete an unused version: %v, %v", res, err)
	}
	for _, p := range []string{filepath.Join(snaps, name), filepath.Join(snaps, name+".lock"), filepath.Join(h.dataDir, "templates", "."+name+".lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s after delete: %v", p, err)
		}
	}
	// Another template's snapshots stay.
	if _, err := os.Stat(filepath.Join(snaps, "base")); baseSnaps == nil && err != nil {
		t.Fatalf("base's snapshots after deleting another version: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("version dir after delete: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(h.dataDir, "templates", "."+name+".old-*")); len(left) != 0 {
		t.Fatalf("delete left %v", left)
	}
	if res, err := del(name); err != nil || res.GetDeleted() {
		t.Fatalf("delete again: %v, %v; want nothing deleted", res, err)
	}
	if _, err := del("../etc"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("delete of a bad name: %v, want invalid_argument", err)
	}
}
