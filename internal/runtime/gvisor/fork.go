package gvisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

var (
	_ runtime.ForkDriver     = (*Driver)(nil)
	_ runtime.SnapshotDriver = (*Driver)(nil)
)

// Fork implements runtime.ForkDriver: a snapshot of the parent into a temporary image in its
// dir, then one `runsc restore` per child, as a template snapshot is restored (each child
// gets its own overlay and memory; runsc takes the addresses of the child's netns). The image
// is removed once every child has been restored.
func (d *Driver) Fork(ctx context.Context, parent runtime.Spec, children []runtime.Spec) ([]error, error) {
	start := time.Now()
	img := filepath.Join(parent.Dir, fmt.Sprintf("fork-%d", time.Now().UnixNano()))
	defer os.RemoveAll(img)
	if err := d.checkpointRunning(ctx, parent, img); err != nil {
		return nil, fmt.Errorf("fork %s: %w", parent.ID, err)
	}
	errs := make([]error, len(children))
	for i, c := range children {
		if err := d.restoreCopy(ctx, c, img, parent.EnvdSecret); err != nil {
			errs[i] = fmt.Errorf("fork into %s: %w", c.ID, err)
		}
	}
	d.log.Info("forked", "id", parent.ID, "children", len(children), "took", time.Since(start).Round(time.Millisecond))
	return errs, nil
}

// Snapshot implements runtime.SnapshotDriver: `runsc checkpoint --leave-running` of s into
// dir. The image holds the memory and the rootfs overlay's content; the overlay file itself
// stays with s.
func (d *Driver) Snapshot(ctx context.Context, s runtime.Spec, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("snapshot %s: %s exists", s.ID, dir)
	}
	start := time.Now()
	if err := d.checkpointRunning(ctx, s, dir); err != nil {
		return fmt.Errorf("snapshot %s: %w", s.ID, err)
	}
	d.log.Info("snapshot taken", "id", s.ID, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// StartFromSnapshot implements runtime.SnapshotDriver. `runsc restore` loads every page and
// the overlay content into the new sandbox's own memory and overlay file (Resume removes its
// image right after the same call), so nothing refers to dir afterwards.
func (d *Driver) StartFromSnapshot(ctx context.Context, s runtime.Spec, dir, sourceSecret string) error {
	if !snapshotComplete(dir) {
		return fmt.Errorf("start %s from snapshot: %s holds no complete checkpoint", s.ID, dir)
	}
	if err := d.restoreCopy(ctx, s, dir, sourceSecret); err != nil {
		return fmt.Errorf("start %s from snapshot: %w", s.ID, err)
	}
	return nil
}

// checkpointRunning writes a checkpoint of running sandbox s into img (complete or absent)
// and leaves s running, as before the call.
func (d *Driver) checkpointRunning(ctx context.Context, s runtime.Spec, img string) error {
	if s.MemoryMiB > 0 {
		if err := d.writeMemoryLimit(s, transientMemoryMiB(s)); err != nil {
			return fmt.Errorf("raise memory limit for the checkpoint: %w", err)
		}
	}
	err := d.freezeEnvd(ctx, s)
	if err == nil {
		err = d.checkpoint(ctx, s, img, true)
	}
	d.restoreMemoryLimit(s)
	if err == nil {
		err = d.waitEnvd(ctx, s)
	}
	d.thawEnvd(context.WithoutCancel(ctx), s)
	return err
}

// restoreCopy starts s from image img of another sandbox. Its envd is that sandbox's copy and
// takes its secret (sourceSecret) until the agent's /init gives it its own.
func (d *Driver) restoreCopy(ctx context.Context, s runtime.Spec, img, sourceSecret string) (err error) {
	// Restoring loads every page while the image holds them too (see Resume).
	rs := s
	if s.MemoryMiB > 0 {
		rs.MemoryMiB = transientMemoryMiB(s)
	}
	bundle, err := d.prepareDir(rs)
	if err != nil {
		return err
	}
	copied := s
	copied.EnvdSecret = sourceSecret
	if err := d.restore(ctx, copied, bundle, img); err != nil {
		d.cleanupFailed(s)
		return err
	}
	d.restoreMemoryLimit(s)
	return nil
}
