package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

var _ runtime.FilesystemPauser = (*Driver)(nil)

// fsSnapshotDir holds a filesystem-only pause: the disk overlay and vm.json, no memory or
// device state. Complete or absent.
const fsSnapshotDir = "fs-snapshot"

// PauseFilesystem implements runtime.FilesystemPauser. The manager has synced the guest's
// filesystems through envd; stopping the vCPUs makes QEMU flush the disk overlay, which is
// then hard-linked into fs-snapshot.tmp with vm.json and renamed into place before QEMU quits.
// Any error before the rename resumes the vCPUs, leaving the sandbox running.
func (d *Driver) PauseFilesystem(ctx context.Context, s runtime.Spec) (err error) {
	var conf vmConf
	if err := readJSON(filepath.Join(s.Dir, vmConfFile), &conf); err != nil {
		return fmt.Errorf("pause %s (filesystem only): no running VM: %w", s.ID, err)
	}
	q, err := d.qmpFor(ctx, s)
	if err != nil {
		return fmt.Errorf("pause %s (filesystem only): no running VM: %w", s.ID, err)
	}
	defer q.close()
	final := filepath.Join(s.Dir, fsSnapshotDir)
	tmp := final + tmpSuffix
	stopped := false
	defer func() {
		if err == nil {
			return
		}
		_ = os.RemoveAll(tmp)
		if stopped {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if cerr := q.exec(rctx, "cont", nil, nil); cerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", cerr))
			}
		}
		err = fmt.Errorf("pause %s (filesystem only): %w", s.ID, err)
	}()
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	// vm_stop drains and flushes every block device: the overlay on disk is whole.
	if err := q.exec(ctx, "stop", nil, nil); err != nil {
		return err
	}
	stopped = true
	if err := os.Link(filepath.Join(s.Dir, diskFile), filepath.Join(tmp, diskFile)); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(tmp, vmConfFile), conf); err != nil {
		return err
	}
	if err := durable.ReplaceDir(tmp, final); err != nil {
		return err
	}
	// Committed: from here on the sandbox is paused whatever happens to QEMU.
	if qerr := d.quitVM(ctx, s, q); qerr != nil {
		d.log.Warn("quit paused VM", "id", s.ID, "err", qerr)
	}
	for _, f := range []string{memFile, diskFile, vmConfFile} {
		if rerr := os.Remove(filepath.Join(s.Dir, f)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			d.log.Warn("remove live file after pause", "id", s.ID, "file", f, "err", rerr)
		}
	}
	return nil
}

// ResumeFilesystem implements runtime.FilesystemPauser: the saved overlay is cloned into the
// sandbox dir (the snapshot stays intact until envd answers) and the VM boots on it with
// fresh RAM, as Create boots.
func (d *Driver) ResumeFilesystem(ctx context.Context, s runtime.Spec) (err error) {
	if err := validSpec(s); err != nil {
		return err
	}
	snap := filepath.Join(s.Dir, fsSnapshotDir)
	var conf vmConf
	if err := readJSON(filepath.Join(snap, vmConfFile), &conf); err != nil {
		return fmt.Errorf("resume %s: no filesystem snapshot: %w", s.ID, err)
	}
	defer func() {
		if err != nil {
			if serr := d.stopVM(s); serr != nil {
				err = errors.Join(err, serr)
			}
			for _, f := range []string{memFile, diskFile} {
				_ = os.Remove(filepath.Join(s.Dir, f))
			}
			err = fmt.Errorf("resume %s (filesystem only): %w", s.ID, err)
		}
	}()
	for _, f := range []string{memFile, diskFile} {
		if err := os.Remove(filepath.Join(s.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := microvm.CloneFile(ctx, filepath.Join(snap, diskFile), filepath.Join(s.Dir, diskFile)); err != nil {
		return err
	}
	p, err := d.launch(ctx, s, conf, "")
	if err != nil {
		return err
	}
	if err := d.waitEnvd(ctx, s, p); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(s.Dir, vmConfFile), conf); err != nil {
		return err
	}
	if err := os.RemoveAll(snap); err != nil {
		d.log.Warn("remove used filesystem snapshot", "id", s.ID, "err", err)
	}
	return nil
}

// HasFilesystemSnapshot implements runtime.FilesystemPauser.
func (d *Driver) HasFilesystemSnapshot(s runtime.Spec) bool {
	_, err := os.Stat(filepath.Join(s.Dir, fsSnapshotDir, vmConfFile))
	return err == nil
}
