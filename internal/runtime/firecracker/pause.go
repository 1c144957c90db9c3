package firecracker

import (
	"context"
	"fmt"
	"github.com/hearthsh/hearth/internal/durable"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// balloonReserveMiB is free memory Pause leaves the guest when it inflates the balloon: the
// guest keeps running for a moment before the vCPUs stop and must not start reclaiming.
const balloonReserveMiB = 32

// Pause implements runtime.Driver, in DESIGN.md's order: inflate the balloon over the
// guest's free memory (the manager has already synced and dropped the guest's caches),
// pause the vCPUs, write a Full snapshot into a temp dir, rename it into
// <dir>/snapshot, then kill Firecracker. If the snapshot cannot be completed the vCPUs
// are resumed and the balloon deflated: the sandbox runs on as before.
func (d *Driver) Pause(ctx context.Context, s runtime.Spec) error {
	v := d.get(s.ID)
	if v == nil {
		return fmt.Errorf("pause %s: not running on this agent", s.ID)
	}
	start := time.Now()
	inflated := d.inflate(ctx, v)
	if err := d.snapshot(ctx, v, s); err != nil {
		if rerr := d.rollback(context.WithoutCancel(ctx), v, inflated); rerr != nil {
			return fmt.Errorf("pause %s: %w (and resuming the VM failed: %v)", s.ID, err, rerr)
		}
		return fmt.Errorf("pause %s: %w", s.ID, err)
	}
	d.take(s.ID)
	if err := d.stop(ctx, v); err != nil {
		return fmt.Errorf("pause %s: snapshot taken, but releasing the VM: %w", s.ID, err)
	}
	d.log.Debug("paused", "id", s.ID, "took", time.Since(start))
	return nil
}

// inflate grows the balloon over the guest's free memory so that those pages are not in
// the snapshot, and waits (up to BalloonTimeout) for the guest to give them up. It is an
// optimisation: failures are logged and the snapshot is taken anyway. It returns whether
// the balloon was set to a non-zero target.
func (d *Driver) inflate(ctx context.Context, v *vm) bool {
	stats, err := v.api.GetBalloonStats(ctx)
	if err != nil {
		d.log.Warn("pause: balloon statistics unavailable, snapshotting without inflating", "id", v.id, "err", err)
		return false
	}
	target := int(stats.FreeMemory>>20) - balloonReserveMiB
	if target <= 0 {
		return false
	}
	if err := v.api.PatchBalloon(ctx, target); err != nil {
		d.log.Warn("pause: inflate balloon", "id", v.id, "err", err)
		return false
	}
	deadline := time.Now().Add(d.cfg.BalloonTimeout)
	for {
		st, err := v.api.GetBalloonStats(ctx)
		if err == nil && st.ActualMiB >= int64(target)*9/10 {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.log.Info("pause: balloon not fully inflated in time", "id", v.id, "target_mib", target, "actual_mib", st.ActualMiB)
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snapshot pauses the vCPUs and writes a Full snapshot that ends up in <dir>/snapshot,
// complete or not at all. Firecracker writes into the VM's root; the result is renamed to
// <dir>/snapshot.tmp and then over <dir>/snapshot (both in the sandbox dir, one
// filesystem), so neither a crash nor a failure leaves a partial snapshot under the name.
func (d *Driver) snapshot(ctx context.Context, v *vm, s runtime.Spec) (err error) {
	work := v.lay.host(snapTmpDir)
	staged := filepath.Join(s.Dir, snapTmpDir)
	defer func() {
		if err != nil {
			_ = os.RemoveAll(work)
			_ = os.RemoveAll(staged)
		}
	}()
	if err := v.api.PauseVM(ctx); err != nil {
		return err
	}
	for _, p := range []string{work, staged} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return err
	}
	if err := d.ownForVM(work); err != nil {
		return err
	}
	err = v.api.CreateSnapshot(ctx, api.SnapshotCreate{
		SnapshotType: api.SnapshotFull,
		SnapshotPath: v.lay.guest(filepath.Join(snapTmpDir, stateFile)),
		MemFilePath:  v.lay.guest(filepath.Join(snapTmpDir, memFile)),
	})
	if err != nil {
		return err
	}
	for _, f := range []string{stateFile, memFile} {
		if err := syncFile(filepath.Join(work, f)); err != nil {
			return fmt.Errorf("snapshot incomplete: %w", err)
		}
	}
	if err := os.Rename(work, staged); err != nil {
		return err
	}
	return durable.ReplaceDir(staged, filepath.Join(s.Dir, snapDir))
}

// rollback resumes a VM whose pause failed and gives the guest its memory back.
func (d *Driver) rollback(ctx context.Context, v *vm, inflated bool) error {
	err := v.api.ResumeVM(ctx)
	if inflated {
		if derr := v.api.PatchBalloon(ctx, 0); derr != nil {
			d.log.Warn("pause rollback: deflate balloon", "id", v.id, "err", derr)
		}
	}
	return err
}

// syncFile flushes a file Firecracker wrote to disk, so a renamed snapshot survives a host
// crash complete.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
