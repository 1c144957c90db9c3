package gvisor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

// TestForkCopiesFilesAndProcesses: children of a fork start with the parent's files and
// running processes, in their own slots, and from then on each sandbox's writes are its own;
// the parent keeps running throughout.
func TestForkCopiesFilesAndProcesses(t *testing.T) {
	d := testDriver(t, CreateRestore)
	parent := create(t, d, 1, 512)
	execIn(t, d, parent.spec.ID, "/bin/sh", "-c", "echo from-parent > /home/user/note")
	envdRun(t, parent, "(i=0; while :; do i=$((i+1)); echo $i > /home/user/counter.new; mv /home/user/counter.new /home/user/counter; sleep 0.1; done) >/dev/null 2>&1 &")
	waitForFile(t, d, parent.spec.ID, "/home/user/counter")
	counter := func(sb *sandbox) int {
		t.Helper()
		n, err := strconv.Atoi(execIn(t, d, sb.spec.ID, "cat", "/home/user/counter"))
		if err != nil {
			t.Fatalf("%s: counter: %v", sb.spec.ID, err)
		}
		return n
	}

	children := []*sandbox{newSpec(t, d, 1, 512), newSpec(t, d, 1, 512)}
	var specs []runtime.Spec
	for _, c := range children {
		specs = append(specs, c.spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	errs, err := d.Fork(ctx, parent.spec, specs)
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
	for _, sb := range append([]*sandbox{parent}, children...) {
		envdHealthy(t, sb)
		envdSocketHealthy(t, d, sb)
		if got := execIn(t, d, sb.spec.ID, "cat", "/home/user/note"); got != "from-parent" {
			t.Errorf("%s: note = %q", sb.spec.ID, got)
		}
		// The copied loop keeps counting (polled: a loaded machine may be slow to schedule it).
		before, after := counter(sb), 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if after = counter(sb); after > before {
				break
			}
		}
		if after <= before {
			t.Errorf("%s: counter stuck at %d: the copied process is not running", sb.spec.ID, after)
		}
	}
	execIn(t, d, children[0].spec.ID, "/bin/sh", "-c", "echo child-only > /home/user/note")
	for _, sb := range []*sandbox{parent, children[1]} {
		if got := execIn(t, d, sb.spec.ID, "cat", "/home/user/note"); got != "from-parent" {
			t.Errorf("%s sees a write made in another sandbox: %q", sb.spec.ID, got)
		}
	}
}
