package gvisor

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime"
)

// hostFreeMiB is the free space of the host filesystem holding dir.
func hostFreeMiB(tb testing.TB, dir string) int64 {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize >> 20
}

// fill writes up to mib MiB of zeros to path in the sandbox and returns dd's output and
// exit status.
func fill(tb testing.TB, d *Driver, id, path string, mib int) (string, int) {
	tb.Helper()
	out := execIn(tb, d, id, "/bin/sh", "-c", "dd if=/dev/zero of="+path+" bs=1M count="+strconv.Itoa(mib)+" 2>&1; echo rc=$?")
	i := strings.LastIndex(out, "rc=")
	rc, _ := strconv.Atoi(out[i+3:])
	return out[:i], rc
}

func fileMiB(tb testing.TB, d *Driver, id, path string) int64 {
	tb.Helper()
	n, err := strconv.ParseInt(execIn(tb, d, id, "stat", "-c", "%s", path), 10, 64)
	if err != nil {
		tb.Fatalf("size of %s in %s: %v", path, id, err)
	}
	return n >> 20
}

// TestDiskLimit: a sandbox cannot write more than Spec.DiskMiB to its root filesystem (dd
// fails with ENOSPC inside, the host loses at most about the limit), another sandbox is
// unaffected, and the full sandbox still pauses and resumes with its files and its limit.
func TestDiskLimit(t *testing.T) {
	const limit = 64
	d := testDriver(t, CreateCold)
	full := newSpec(t, d, 1, 256)
	full.spec.DiskMiB = limit
	run := func(op func(context.Context, runtime.Spec) error, s runtime.Spec) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		start := time.Now()
		if err := op(ctx, s); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s took %v", s.ID, time.Since(start).Round(time.Millisecond))
	}
	run(d.Create, full.spec)
	other := newSpec(t, d, 1, 256)
	other.spec.DiskMiB = limit
	run(d.Create, other.spec)

	before := hostFreeMiB(t, full.spec.Dir)
	out, rc := fill(t, d, full.spec.ID, "/big", 200)
	if rc == 0 || !strings.Contains(out, "No space left on device") {
		t.Fatalf("dd of 200 MiB into a %d MiB disk: rc=%d, %q; want ENOSPC", limit, rc, out)
	}
	if got := fileMiB(t, d, full.spec.ID, "/big"); got > limit {
		t.Errorf("/big is %d MiB, above the %d MiB limit", got, limit)
	}
	drop := before - hostFreeMiB(t, full.spec.Dir)
	t.Logf("host free space dropped by %d MiB", drop)
	if drop > limit+32 {
		t.Errorf("host free space dropped by %d MiB for a %d MiB disk", drop, limit)
	}
	if out, rc := fill(t, d, other.spec.ID, "/ten", 10); rc != 0 {
		t.Errorf("the other sandbox cannot write 10 MiB: rc=%d %q", rc, out)
	}

	pauseResume(t, d, full)
	envdHealthy(t, full)
	if got := fileMiB(t, d, full.spec.ID, "/big"); got < limit/2 {
		t.Errorf("/big is %d MiB after resume; the file's content was lost", got)
	}
	if out, rc := fill(t, d, full.spec.ID, "/more", 100); rc == 0 {
		t.Errorf("after resume the disk takes 100 MiB more: the limit was lost (%q)", out)
	}
	execIn(t, d, full.spec.ID, "rm", "-f", "/big", "/more")
	if out, rc := fill(t, d, full.spec.ID, "/ten", 10); rc != 0 {
		t.Errorf("after freeing space the sandbox cannot write 10 MiB: rc=%d %q", rc, out)
	}
}

// TestHostDirsBounded: the host dirs a sandbox can write through (the socket dir shared at
// /run/hearth, and envd's stdout, reachable as /proc/1/fd/1) fill up at a small bound with
// ENOSPC, and envd's host socket keeps working after pause and resume.
func TestHostDirsBounded(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 256)
	before := hostFreeMiB(t, sb.spec.Dir)
	out, rc := fill(t, d, sb.spec.ID, guestSocketDir+"/big", 64)
	if rc == 0 || !strings.Contains(out, "No space left on device") {
		t.Errorf("dd of 64 MiB into %s: rc=%d, %q; want ENOSPC", guestSocketDir, rc, out)
	}
	out, rc = fill(t, d, sb.spec.ID, "/proc/1/fd/1", 64)
	if rc == 0 || !strings.Contains(out, "No space left on device") {
		t.Errorf("dd of 64 MiB into envd's stdout: rc=%d, %q; want ENOSPC", rc, out)
	}
	drop := before - hostFreeMiB(t, sb.spec.Dir)
	t.Logf("host free space dropped by %d MiB", drop)
	if drop > 32 {
		t.Errorf("host free space dropped by %d MiB", drop)
	}
	envdSocketHealthy(t, d, sb)

	execIn(t, d, sb.spec.ID, "rm", "-f", guestSocketDir+"/big")
	pauseResume(t, d, sb)
	envdSocketHealthy(t, d, sb)
}

// pauseResume pauses sb and resumes it, as the agent does (the slot's address put back first).
func pauseResume(t *testing.T, d *Driver, sb *sandbox) {
	t.Helper()
	for _, op := range []func(context.Context, runtime.Spec) error{d.Pause, func(ctx context.Context, s runtime.Spec) error {
		if err := sb.slot.ReAdd(); err != nil {
			return err
		}
		return d.Resume(ctx, s)
	}} {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		err := op(ctx, sb.spec)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestForkKeepsDiskLimit: a fork's children start with the parent's written files and the
// same disk limit.
func TestForkKeepsDiskLimit(t *testing.T) {
	const limit = 64
	d := testDriver(t, CreateCold)
	parent := newSpec(t, d, 1, 256)
	parent.spec.DiskMiB = limit
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Create(ctx, parent.spec); err != nil {
		t.Fatal(err)
	}
	if out, rc := fill(t, d, parent.spec.ID, "/half", 40); rc != 0 {
		t.Fatalf("40 MiB into a %d MiB disk: rc=%d %q", limit, rc, out)
	}
	child := newSpec(t, d, 1, 256)
	child.spec.DiskMiB = limit
	errs, err := d.Fork(ctx, parent.spec, []runtime.Spec{child.spec})
	if err == nil {
		err = errs[0]
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := fileMiB(t, d, child.spec.ID, "/half"); got != 40 {
		t.Errorf("the child's /half is %d MiB, want the parent's 40", got)
	}
	for _, sb := range []*sandbox{parent, child} {
		if out, rc := fill(t, d, sb.spec.ID, "/more", 40); rc == 0 || !strings.Contains(out, "No space left on device") {
			t.Errorf("%s: 40 MiB more on top of 40 in a %d MiB disk: rc=%d %q; want ENOSPC", sb.spec.ID, limit, rc, out)
		}
	}
}
