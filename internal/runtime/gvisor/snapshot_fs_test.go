package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotOutlivesSource: a snapshot taken of a running sandbox leaves it running, starts
// sandboxes after the source is destroyed, and is no longer needed once they run.
func TestSnapshotOutlivesSource(t *testing.T) {
	d := testDriver(t, CreateCold)
	src := create(t, d, 1, 512)
	execIn(t, d, src.spec.ID, "/bin/sh", "-c", "echo from-source > /home/user/note")
	img := filepath.Join(t.TempDir(), "snap")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Snapshot(ctx, src.spec, img); err != nil {
		t.Fatal(err)
	}
	envdHealthy(t, src)
	if err := d.Snapshot(ctx, src.spec, img); err == nil {
		t.Fatal("a second snapshot overwrote an existing one")
	}
	if err := d.Destroy(ctx, src.spec); err != nil {
		t.Fatal(err)
	}
	copies := []*sandbox{newSpec(t, d, 1, 512), newSpec(t, d, 1, 512)}
	for _, c := range copies {
		if err := d.StartFromSnapshot(ctx, c.spec, img, src.spec.EnvdSecret); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(img); err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		envdHealthy(t, c)
		if got := execIn(t, d, c.spec.ID, "cat", "/home/user/note"); got != "from-source" {
			t.Fatalf("%s: note %q", c.spec.ID, got)
		}
	}
	if err := d.StartFromSnapshot(ctx, newSpec(t, d, 1, 512).spec, img, ""); err == nil {
		t.Fatal("started from a removed snapshot")
	}
}

// TestPauseFilesystem: a filesystem-only pause stops the sandbox keeping only its files;
// resuming boots it afresh (new boot_id, no old processes) with writes and deletions intact.
func TestPauseFilesystem(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 512)
	execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "echo kept > /home/user/kept; rm /etc/motd; (sleep 1000 >/dev/null 2>&1 &)")
	boot := execIn(t, d, sb.spec.ID, "cat", "/proc/sys/kernel/random/boot_id")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.PauseFilesystem(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	if !d.HasFilesystemSnapshot(sb.spec) {
		t.Fatal("no filesystem snapshot after the pause")
	}
	if ps := sandboxProcesses(sb.spec.ID); len(ps) > 0 {
		t.Fatalf("processes of the paused sandbox remain: %v", ps)
	}
	if err := sb.slot.ReAdd(); err != nil {
		t.Fatal(err)
	}
	if err := d.ResumeFilesystem(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	envdHealthy(t, sb)
	if got := execIn(t, d, sb.spec.ID, "cat", "/home/user/kept"); got != "kept" {
		t.Fatalf("kept = %q", got)
	}
	if got := execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "test -e /etc/motd && echo back || echo gone"); got != "gone" {
		t.Fatalf("deleted file: %s", got)
	}
	if got := execIn(t, d, sb.spec.ID, "cat", "/proc/sys/kernel/random/boot_id"); got == boot {
		t.Fatal("boot_id unchanged: not booted afresh")
	}
	if got := execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "pgrep -x sleep || echo none"); got != "none" {
		t.Fatalf("a process survived: %s", got)
	}
	if d.HasFilesystemSnapshot(sb.spec) {
		t.Fatal("the used filesystem snapshot was kept")
	}
}
