package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestPauseFilesystem: a filesystem-only pause quits the VM keeping only its disk overlay;
// resuming boots it afresh (new boot_id, no old processes) with its writes and deletions.
func TestPauseFilesystem(t *testing.T) {
	d := testDriver(t, Config{})
	sb := create(t, d, 1, testMemMiB)
	envdRun(t, sb, "echo kept > /home/user/kept; rm /etc/motd; (sleep 1000 >/dev/null 2>&1 &); sync")
	boot := trim(envdRun(t, sb, "cat /proc/sys/kernel/random/boot_id"))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.PauseFilesystem(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	if p := qemuProcesses(d, sb.spec.ID); len(p) > 0 {
		t.Fatalf("QEMU still running while paused: %v", p)
	}
	if !d.HasFilesystemSnapshot(sb.spec) {
		t.Fatal("no filesystem snapshot after the pause")
	}
	if _, err := os.Stat(filepath.Join(sb.spec.Dir, memFile)); !os.IsNotExist(err) {
		t.Fatalf("guest memory kept by a filesystem-only pause: %v", err)
	}
	t.Logf("filesystem-only pause: overlay %d KiB allocated", allocated(t, filepath.Join(sb.spec.Dir, fsSnapshotDir, diskFile))>>10)
	if err := d.ResumeFilesystem(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	if got := trim(envdRun(t, sb, "cat /home/user/kept; test -e /etc/motd && echo motd-back; pgrep -x sleep || echo no-sleep")); got != "kept\nno-sleep" {
		t.Fatalf("after resume: %q", got)
	}
	if got := trim(envdRun(t, sb, "cat /proc/sys/kernel/random/boot_id")); got == boot {
		t.Fatal("boot_id unchanged: not booted afresh")
	}
	if d.HasFilesystemSnapshot(sb.spec) {
		t.Fatal("the used filesystem snapshot was kept")
	}
	// The memory pause works on the rebooted VM.
	pause(t, d, sb)
	resume(t, d, sb)
	if got := trim(envdRun(t, sb, "cat /home/user/kept")); got != "kept" {
		t.Fatalf("after a memory pause: %q", got)
	}
}
