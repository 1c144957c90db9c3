package gvisor

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestIDThatPrefixesAnother: runsc takes a container ID as a prefix, so before the driver
// terminated its container IDs, a sandbox whose ID began another's could not be stopped (every
// runsc call for it failed as ambiguous, and Destroy waited for it forever: the warm pool's
// "warm-c0" next to a pooled "warm-c0…"), and a Destroy of a gone ID killed the sandbox whose
// ID it began. Each case must end quickly and leave the other sandbox running.
func TestIDThatPrefixesAnother(t *testing.T) {
	d := testDriver(t, CreateCold)
	short := newSpec(t, d, 1, 256)
	long := newSpec(t, d, 1, 256)
	long.spec.ID = short.spec.ID + "0"
	long.spec.Dir = filepath.Join(filepath.Dir(long.spec.Dir), long.spec.ID)
	boot := func(sb *sandbox) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := d.Create(ctx, sb.spec); err != nil {
			t.Fatal(err)
		}
	}
	destroy := func(sb *sandbox) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		start := time.Now()
		if err := d.Destroy(ctx, sb.spec); err != nil {
			t.Fatalf("destroy %s: %v", sb.spec.ID, err)
		}
		// The polite path takes well under a second; stopTimeout means it failed.
		if took := time.Since(start); took > stopTimeout/2 {
			t.Errorf("destroy %s took %s", sb.spec.ID, took)
		}
	}

	boot(long)
	destroy(short) // never created: nothing of it to stop, and long is not it
	envdHealthy(t, long)

	boot(short)
	envdHealthy(t, short)
	destroy(short)
	envdHealthy(t, long)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.runsc.state(ctx, containerID(short.spec.ID)); !isNotExist(err) {
		t.Errorf("runsc still knows %s after destroy: %v", short.spec.ID, err)
	}
}

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
