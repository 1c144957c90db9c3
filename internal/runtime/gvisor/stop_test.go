package gvisor

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestForceStopLeavesNothing: the escalation stopAndDelete takes past stopTimeout, when runsc
// would not stop a container, SIGKILLs the sandbox's processes and deletes runsc's record, so a
// Destroy after it finds nothing of the sandbox left.
func TestForceStopLeavesNothing(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 256)
	cid := containerID(sb.spec.ID)
	if len(sandboxProcesses(cid)) == 0 {
		t.Fatalf("no runsc process names %s", cid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.runsc.forceStop(ctx, cid, errors.New("test: runsc would not stop it")); err != nil {
		t.Fatal(err)
	}
	if pids := sandboxProcesses(cid); len(pids) > 0 {
		t.Errorf("processes of %s left after forceStop: %v", cid, pids)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if _, err := d.runsc.state(sctx, cid); !isNotExist(err) {
		t.Errorf("runsc still knows %s after forceStop: %v", cid, err)
	}
	if err := d.Destroy(ctx, sb.spec); err != nil {
		t.Errorf("destroy after forceStop: %v", err)
	}
	if l := leftovers(t, d, sb.spec.ID); len(l) > 0 {
		t.Errorf("left after forceStop and destroy: %v", l)
	}
}
