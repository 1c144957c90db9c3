package qemu

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// TestDiskLimit: the VM's root filesystem has about Spec.DiskMiB free, so writing past it
// fails with ENOSPC in the guest, the sandbox's overlay on the host stays near the limit,
// and the files survive pause and resume.
func TestDiskLimit(t *testing.T) {
	const limit = 64
	d := testDriver(t, Config{})
	sb := newSpec(t, d, 1, testMemMiB)
	sb.spec.DiskMiB = limit
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Create(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	out := envdRun(t, sb, "dd if=/dev/zero of=/big bs=1M count=200 2>&1; echo rc=$?; sync")
	if !strings.Contains(out, "No space left on device") || strings.Contains(out, "rc=0") {
		t.Fatalf("dd of 200 MiB into a %d MiB disk: %q; want ENOSPC", limit, out)
	}
	size, err := strconv.ParseInt(trim(envdRun(t, sb, "stat -c %s /big")), 10, 64)
	if err != nil || size>>20 > limit || size>>20 < limit/2 {
		t.Errorf("/big is %d bytes (%v); want about %d MiB", size, err, limit)
	}
	alloc, err := microvm.AllocatedBytes(filepath.Join(sb.spec.Dir, diskFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overlay allocated %d MiB on the host", alloc>>20)
	if alloc>>20 > limit+32 {
		t.Errorf("the sandbox's overlay takes %d MiB on the host for a %d MiB disk", alloc>>20, limit)
	}
	pause(t, d, sb)
	resume(t, d, sb)
	if got := trim(envdRun(t, sb, "stat -c %s /big")); got != strconv.FormatInt(size, 10) {
		t.Errorf("/big after resume: %q bytes, want %d", got, size)
	}
}
