package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// Resume implements runtime.Driver. The snapshot's memory file and disk overlay are cloned
// (reflink where the filesystem can, else a copy of their data extents only) into the
// sandbox dir and the clone of the memory file is mapped shared again. That keeps the
// snapshot intact until envd answers, as the interface requires, and keeps the next pause
// as cheap as the first: mapping the snapshot's file privately (copy-on-write) would avoid
// the copy, but QEMU then migrates that RAM like any private memory and the next snapshot
// holds all of it in the state file. The snapshot is removed once the VM answers.
func (d *Driver) Resume(ctx context.Context, s runtime.Spec) error {
	if err := d.resume(ctx, s); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	return nil
}

func (d *Driver) resume(ctx context.Context, s runtime.Spec) (err error) {
	if err := validSpec(s); err != nil {
		return err
	}
	snap := filepath.Join(s.Dir, snapshotDir)
	var conf snapConf
	if err := readJSON(filepath.Join(snap, vmConfFile), &conf); err != nil {
		return fmt.Errorf("no snapshot: %w", err)
	}
	for _, f := range []string{stateFile, memFile, diskFile} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			return fmt.Errorf("incomplete snapshot: %w", err)
		}
	}
	for _, f := range []string{conf.Kernel, conf.Initrd, conf.Image} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("snapshot needs %s: %w", f, err)
		}
	}
	defer func() {
		if err != nil {
			if serr := d.stopVM(s); serr != nil {
				err = errors.Join(err, serr)
			}
			for _, f := range []string{memFile, diskFile} {
				_ = os.Remove(filepath.Join(s.Dir, f))
			}
		}
	}()
	start := time.Now()
	for _, f := range []string{memFile, diskFile} {
		live := filepath.Join(s.Dir, f)
		// Only a name: after an interrupted pause it may be a hard link to the snapshot.
		if err := os.Remove(live); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := microvm.CloneFile(ctx, filepath.Join(snap, f), live); err != nil {
			return err
		}
	}
	cloned := time.Since(start)
	p, err := d.launch(ctx, s, conf.vmConf, filepath.Join(snap, stateFile))
	if err != nil {
		return err
	}
	q, err := d.qmpFor(ctx, s)
	if err != nil {
		return err
	}
	defer q.close()
	if err := q.exec(ctx, "migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
		{"capability": "x-ignore-shared", "state": true},
	}}, nil); err != nil {
		return err
	}
	if err := q.exec(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat '" + filepath.Join(snap, stateFile) + "'"}, nil); err != nil {
		return err
	}
	if err := waitIncoming(ctx, q, p); err != nil {
		return fmt.Errorf("%w; %s", err, vmLogs(s.Dir))
	}
	loaded := time.Since(start)
	if err := q.exec(ctx, "cont", nil, nil); err != nil {
		return err
	}
	// Give the guest its memory back; it takes pages as it needs them.
	if err := (qmpBalloon{q}).SetTarget(ctx, int64(conf.MemoryMiB)<<20); err != nil {
		return err
	}
	if err := d.waitEnvd(ctx, s, p); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(s.Dir, vmConfFile), conf.vmConf); err != nil {
		return err
	}
	// The VM runs on its own copies now; the snapshot is stale and the next Pause writes anew.
	if err := os.RemoveAll(snap); err != nil {
		d.log.Warn("remove used snapshot", "id", s.ID, "err", err)
	}
	d.log.Debug("resumed", "id", s.ID, "clone", cloned, "loaded", loaded, "took", time.Since(start))
	return nil
}

// waitIncoming waits until QEMU has loaded the device state: the run state leaves
// "inmigrate" (a failed load makes QEMU exit).
func waitIncoming(ctx context.Context, q *qmp, p *vmProc) error {
	for {
		st, err := q.status(ctx)
		if err != nil {
			return fmt.Errorf("load device state: %w", err)
		}
		if st != "inmigrate" {
			if st != "paused" && st != "running" {
				return fmt.Errorf("load device state: VM in state %q", st)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("load device state: %w", ctx.Err())
		case <-p.done:
			return errors.New("load device state: qemu exited")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
