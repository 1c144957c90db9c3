package gvisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/filelock"

	"github.com/hearthsh/hearth/internal/runtime"
)

// templateSnapshot returns the checkpoint image dir that new sandboxes of s.Template are
// restored from. The first Create of a template version has none yet: it boots s cold, waits
// for envd, checkpoints it with --leave-running into the cache and keeps s running
// (booted=true). Later Creates restore from that image; each restore gets its own overlay
// file and its own memory, so clones share nothing writable.
//
// The image is not tied to a network slot: on restore runsc rebuilds the sandbox's
// interfaces, addresses and routes from the target netns, so a clone restored into another
// slot takes that slot's addresses.
func (d *Driver) templateSnapshot(ctx context.Context, s runtime.Spec, bundle string) (img string, booted bool, err error) {
	if s.Template.Version == "" {
		return "", false, fmt.Errorf("template %s has no version to key its snapshot on", s.Template.Name)
	}
	key, err := d.snapshotKey(s)
	if err != nil {
		return "", false, err
	}
	base := filepath.Join(d.cfg.SnapshotDir, s.Template.Name)
	img = filepath.Join(base, key)
	if snapshotComplete(img) {
		return img, false, nil
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", false, err
	}
	unlock, err := filelock.Lock(ctx, base+lockSuffix)
	if err != nil {
		return "", false, fmt.Errorf("template snapshot %s: %w", s.Template.Name, err)
	}
	defer unlock()
	if snapshotComplete(img) { // made by a concurrent Create while this one waited
		return img, false, nil
	}
	start := time.Now()
	if err := d.boot(ctx, s, bundle); err != nil {
		return "", false, err
	}
	// An API-built template's start command runs now, so every sandbox restored from the
	// image finds its server up and ready.
	if err := runtime.RunStartCommand(ctx, s.EnvdAddr(), s.Template, d.cfg.ReadyTimeout); err != nil {
		return "", false, fmt.Errorf("template snapshot %s: %w", s.Template.Name, err)
	}
	if err := d.freezeEnvd(ctx, s); err != nil {
		d.thawEnvd(context.WithoutCancel(ctx), s)
		return "", false, fmt.Errorf("template snapshot %s: %w", s.Template.Name, err)
	}
	if err := d.checkpoint(ctx, s, img, true); err != nil {
		return "", false, fmt.Errorf("template snapshot %s: %w", s.Template.Name, err)
	}
	if err := d.waitEnvd(ctx, s); err != nil {
		return "", false, fmt.Errorf("after template checkpoint: %w", err)
	}
	d.thawEnvd(ctx, s)
	// Snapshots of older versions of this template can never be restored again.
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			if e.Name() != key {
				_ = os.RemoveAll(filepath.Join(base, e.Name()))
			}
		}
	}
	d.log.Info("template snapshot taken", "template", s.Template.Name, "version", s.Template.Version,
		"took", time.Since(start).Round(time.Millisecond))
	return img, true, nil
}

// snapshotKey names the template snapshot that sandbox s can be restored from. runsc refuses
// to restore a checkpoint whose spec differs in anything but per-sandbox fields (process,
// capabilities, mounts, ...), and a checkpoint only loads into the runsc that wrote it, so the
// key covers the template version, the spec with per-sandbox fields blanked, and the runsc
// binary. A restored overlay keeps the size it was checkpointed with, so the key covers the
// disk size too.
func (d *Driver) snapshotKey(s runtime.Spec) (string, error) {
	shape := s
	shape.ID, shape.Dir, shape.Net, shape.CPUs, shape.MemoryMiB = "", "", runtime.Net{}, 0, 0
	b, err := json.Marshal(ociSpec(shape, d.cfg.CgroupParent))
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(d.runsc.bin)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(b)
	fmt.Fprintf(h, "\x00%s\x00%d\x00%d\x00%d", d.runsc.platform, fi.Size(), fi.ModTime().UnixNano(), s.DiskMiB)
	return s.Template.Version + "-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

var _ runtime.StartSnapshotDriver = (*Driver)(nil)

// StartSnapshots implements runtime.StartSnapshotDriver: templateSnapshot runs the start
// command before it checkpoints.
func (d *Driver) StartSnapshots() bool { return true }

var _ runtime.TemplateDropper = (*Driver)(nil)

// DropTemplate implements runtime.TemplateDropper: the template snapshots of name (every
// key: one per runsc binary and spec shape) and their lock go. It takes the lock first, so
// it never removes an image a Create is writing.
func (d *Driver) DropTemplate(ctx context.Context, name string) error {
	if name == "" || name != filepath.Base(name) || !filepath.IsLocal(name) {
		return fmt.Errorf("drop template snapshots: invalid template name %q", name)
	}
	base := filepath.Join(d.cfg.SnapshotDir, name)
	if _, err := os.Lstat(base); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Lstat(base + lockSuffix); errors.Is(err, os.ErrNotExist) {
			return nil // nothing here: do not make a lock file only to remove it
		}
	}
	lock, err := filelock.Acquire(ctx, base+lockSuffix)
	if err != nil {
		return fmt.Errorf("drop template snapshots of %s: %w", name, err)
	}
	if err := os.RemoveAll(base); err != nil {
		lock.Unlock()
		return fmt.Errorf("drop template snapshots of %s: %w", name, err)
	}
	return lock.UnlockAndRemove()
}

func snapshotComplete(img string) bool {
	_, err := os.Stat(filepath.Join(img, "checkpoint.img"))
	return err == nil
}

var _ runtime.PortablePauser = (*Driver)(nil)

// PausedDirs implements runtime.PortablePauser: a checkpoint image holds the sandbox's
// memory and its rootfs overlay (the overlay's host file is part of it), and the filesystem
// snapshot its overlay alone; the rest of the sandbox dir (bundle, sockets, logs) is made
// again by the resume.
func (d *Driver) PausedDirs(filesystemOnly bool) []string {
	if filesystemOnly {
		return []string{fsSnapshotDir}
	}
	return []string{snapshotDir}
}
