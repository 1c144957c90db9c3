package gvisor

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/procs"
	"github.com/hearthsh/hearth/internal/runtime"
)

var _ runtime.PauseRecoverer = (*Driver)(nil)

// RecoverPause implements runtime.PauseRecoverer. The agent that was killed may have left:
//   - a complete snapshot (killed after the rename): kept;
//   - a `runsc checkpoint` call still running: awaited, then as below;
//   - a checkpoint the sandbox is still writing to the temp dir (the sandbox process
//     writes it, and goes on when the runsc call dies with the agent's pipes): awaited
//     until the container stops, for at most checkpointWait;
//   - a checkpoint written in full to the temp dir, the container stopped (runsc stops it
//     only once the image is written; a failed checkpoint leaves it running): fsynced and
//     renamed into place;
//   - the container still running (killed before the checkpoint, or after a restore): it
//     is paused now.
func (d *Driver) RecoverPause(ctx context.Context, s runtime.Spec) error {
	final := filepath.Join(s.Dir, snapshotDir)
	if err := d.waitCheckpointCalls(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("recover pause %s: %w", s.ID, err)
	}
	if snapshotComplete(final) {
		d.log.Info("recover pause: the snapshot is complete", "id", s.ID)
		return nil
	}
	st, err := d.runsc.state(ctx, containerID(s.ID))
	if err == nil && st.Status == statusRunning && snapshotComplete(final+tmpSuffix) {
		st, err = d.waitCheckpointWritten(ctx, containerID(s.ID))
	}
	switch {
	case err == nil && st.Status == statusRunning:
		d.log.Info("recover pause: the sandbox still runs; pausing it", "id", s.ID)
		return d.Pause(ctx, s)
	case err == nil && st.Status == statusStopped && snapshotComplete(final+tmpSuffix):
		if err := durable.ReplaceDir(final+tmpSuffix, final); err != nil {
			return fmt.Errorf("recover pause %s: %w", s.ID, err)
		}
		d.log.Info("recover pause: the checkpoint the sandbox finished writing is in place", "id", s.ID)
		return nil
	case err != nil && !isNotExist(err):
		return fmt.Errorf("recover pause %s: %w", s.ID, err)
	}
	return fmt.Errorf("recover pause %s: no snapshot, and the sandbox does not run (status %q)", s.ID, st.Status)
}

// checkpointWait bounds how long RecoverPause waits for a checkpoint the sandbox is writing;
// a small sandbox's takes well under a second.
const checkpointWait = 20 * time.Second

// waitCheckpointWritten waits until the container stops (its checkpoint written) and returns
// its last state; one still running after checkpointWait is taken as a checkpoint that failed
// or never began.
func (d *Driver) waitCheckpointWritten(ctx context.Context, id string) (containerState, error) {
	ctx, cancel := context.WithTimeout(ctx, checkpointWait)
	defer cancel()
	for {
		st, err := d.runsc.state(ctx, id)
		if err != nil || st.Status != statusRunning || ctx.Err() != nil {
			if ctx.Err() != nil && err != nil {
				return d.runsc.state(context.WithoutCancel(ctx), id)
			}
			return st, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitCheckpointCalls waits until no `runsc checkpoint` of container id under this root runs.
func (d *Driver) waitCheckpointCalls(ctx context.Context, id string) error {
	match := func(args []string) bool {
		return hasRoot(args, d.runsc.root) && slices.Contains(args, "checkpoint") && args[len(args)-1] == id
	}
	for {
		pids := procs.Find(match)
		if len(pids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the checkpoint call the previous agent left (pids %v): %w", pids, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
