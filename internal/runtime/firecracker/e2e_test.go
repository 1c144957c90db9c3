package firecracker

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/kvmcheck"
)

// TestEndToEnd boots, pauses and resumes a real Firecracker sandbox. It needs a KVM that
// really runs guests, FIRECRACKER_BIN and HEARTH_FC_KERNEL (an uncompressed vmlinux with
// virtio-mmio, ext4 and IP autoconfiguration built in); FIRECRACKER_JAILER and
// HEARTH_FC_INITRD are used when set. The template is a directory with envd built from
// this tree, booted with envd as init. This is the driver's one skippable test.
func TestEndToEnd(t *testing.T) {
	var missing []string
	if k := kvmcheck.Probe(); !k.Usable {
		missing = append(missing, "a usable KVM ("+k.Reason+")")
	}
	bin, kernel := os.Getenv("FIRECRACKER_BIN"), os.Getenv("HEARTH_FC_KERNEL")
	if bin == "" {
		missing = append(missing, "FIRECRACKER_BIN (path of a firecracker binary)")
	}
	if kernel == "" {
		missing = append(missing, "HEARTH_FC_KERNEL (path of a guest vmlinux)")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		t.Skip("end-to-end Firecracker test needs: " + strings.Join(missing, "; "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	base, err := os.MkdirTemp("", "fce2e")
	must(t, err)
	defer os.RemoveAll(base)
	tpl := filepath.Join(base, "tpl")
	for _, d := range []string{"usr/bin", "proc", "sys", "dev", "tmp", "root", "etc"} {
		must(t, os.MkdirAll(filepath.Join(tpl, d), 0o755))
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tpl, "usr/bin/envd"), "github.com/hearthsh/hearth/cmd/envd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build envd: %v\n%s", err, out)
	}
	d, err := New(Config{
		Firecracker: bin, Jailer: os.Getenv("FIRECRACKER_JAILER"), UID: 65534, GID: 65534,
		Kernel: kernel, Initrd: os.Getenv("HEARTH_FC_INITRD"),
		RunDir: filepath.Join(base, "run"), ImageDir: filepath.Join(base, "img"),
		IDPrefix: "hfce2e", CgroupParent: "hearth-fc-e2e",
	})
	must(t, err)
	must(t, d.Reclaim(ctx))
	pool, err := netslot.New(netslot.Config{CIDR: netip.MustParsePrefix("10.241.0.0/24"), Prefix: "hfce2e"})
	must(t, err)
	slot, err := pool.Acquire(ctx, "e2e-1", netslot.WithTAP())
	must(t, err)
	defer pool.Release(context.Background(), slot)

	s := runtime.Spec{
		ID: "e2e-1", Dir: filepath.Join(base, "sandboxes", "e2e-1"),
		Template: runtime.Template{Name: "e2e", RootFS: tpl, Version: "1"},
		Net:      runtime.Net{NetNS: slot.NetnsPath, GuestIP: slot.GuestAddr},
		CPUs:     1, MemoryMiB: 512,
	}
	defer d.Destroy(context.Background(), s)
	start := time.Now()
	must(t, d.Create(ctx, s))
	t.Logf("create: %v", time.Since(start))
	start = time.Now()
	must(t, d.Pause(ctx, s))
	t.Logf("pause: %v", time.Since(start))
	start = time.Now()
	must(t, d.Resume(ctx, s))
	t.Logf("resume: %v", time.Since(start))
	must(t, d.Destroy(ctx, s))
}
