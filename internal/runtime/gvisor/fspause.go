package gvisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/cgroups"
	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/runtime"
)

var _ runtime.FilesystemPauser = (*Driver)(nil)

// fsSnapshotDir holds a filesystem-only pause (`runsc fscheckpoint`); complete or absent.
const fsSnapshotDir = "fs-snapshot"

// PauseFilesystem implements runtime.FilesystemPauser: `runsc fscheckpoint` saves the rootfs
// overlay's content (no memory) into <dir>/fs-snapshot and stops the container.
func (d *Driver) PauseFilesystem(ctx context.Context, s runtime.Spec) error {
	start := time.Now()
	final := filepath.Join(s.Dir, fsSnapshotDir)
	tmp := final + tmpSuffix
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pause %s (filesystem only): %w", s.ID, err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("pause %s (filesystem only): %w", s.ID, err)
	}
	// --leave-running: the container is stopped below only once the image is safely in
	// place, so a failed rename leaves the sandbox running as the contract asks.
	if _, err := d.runsc.output(ctx, s, "fscheckpoint", "--image-path", tmp, "--leave-running", containerID(s.ID)); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("pause %s (filesystem only): %w", s.ID, err)
	}
	if err := durable.ReplaceDir(tmp, final); err != nil {
		return fmt.Errorf("pause %s (filesystem only): %w", s.ID, err)
	}
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("pause %s (filesystem only): release: %w", s.ID, err)
	}
	if err := cgroups.Remove(ctx, cgroupPath(d.cfg.CgroupParent, s.ID)); err != nil {
		return fmt.Errorf("pause %s (filesystem only): release: %w", s.ID, err)
	}
	d.log.Info("paused (filesystem only)", "id", s.ID, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// ResumeFilesystem implements runtime.FilesystemPauser: a cold boot (`runsc create
// --fs-restore-image-path`, `start`) on the saved overlay. The image is removed once the
// sandbox runs: its overlay file holds the content from then on.
func (d *Driver) ResumeFilesystem(ctx context.Context, s runtime.Spec) error {
	img := filepath.Join(s.Dir, fsSnapshotDir)
	if !d.HasFilesystemSnapshot(s) {
		return fmt.Errorf("resume %s: no filesystem snapshot in %s", s.ID, img)
	}
	bundle, err := d.prepareDir(s)
	if err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	err = d.runsc.spawn(ctx, s, "create", "--bundle", bundle, "--fs-restore-image-path", img, containerID(s.ID))
	if err == nil {
		err = d.runsc.spawn(ctx, s, "start", containerID(s.ID))
	}
	if err == nil {
		err = d.waitEnvd(ctx, s)
	}
	if err != nil {
		d.cleanupFailed(s)
		return fmt.Errorf("resume %s (filesystem only): %w", s.ID, err)
	}
	if err := os.RemoveAll(img); err != nil {
		d.log.Warn("remove used filesystem snapshot", "id", s.ID, "err", err)
	}
	return nil
}

// HasFilesystemSnapshot implements runtime.FilesystemPauser.
func (d *Driver) HasFilesystemSnapshot(s runtime.Spec) bool {
	ents, err := os.ReadDir(filepath.Join(s.Dir, fsSnapshotDir))
	return err == nil && len(ents) > 0
}
