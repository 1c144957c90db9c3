package firecracker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// Resume implements runtime.Driver: a uffd server for the snapshot's memory, a new
// Firecracker in the slot's netns, snapshot/load with the Uffd backend, vCPUs resumed,
// balloon deflated, identity re-published, then envd's /health. The snapshot stays: the
// VM faults its memory in from it for as long as it runs, and the next Pause replaces it.
func (d *Driver) Resume(ctx context.Context, s runtime.Spec) (err error) {
	start := time.Now()
	if err := checkSpec(s); err != nil {
		return err
	}
	if d.get(s.ID) != nil {
		return fmt.Errorf("resume %s: already running", s.ID)
	}
	snap := filepath.Join(s.Dir, snapDir)
	for _, f := range []string{stateFile, memFile} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			return fmt.Errorf("resume %s: no snapshot: %w", s.ID, err)
		}
	}
	l, err := d.newLayout(s.ID)
	if err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	v := &vm{id: s.ID, lay: l}
	defer func() {
		if err != nil {
			if serr := d.stop(context.WithoutCancel(ctx), v); serr != nil {
				d.log.Warn("cleanup after failed resume", "id", s.ID, "err", serr)
			}
		}
	}()
	if err := d.prepareRoot(l); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	// The snapshot names the disk by the path it had at boot, which layout keeps stable.
	if err := l.link(filepath.Join(s.Dir, rootfsFile), rootfsFile); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if err := l.link(filepath.Join(snap, stateFile), filepath.Join(snapDir, stateFile)); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	v.memServer, err = startMemServer(l.host(uffdSock), filepath.Join(snap, memFile), l.jailed, d.cfg.UID, d.cfg.GID,
		d.log.With("id", s.ID))
	if err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if v.proc, v.api, err = d.start(ctx, s, l); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if err := d.load(ctx, v, s); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if err := v.proc.waitEnvd(ctx, s.EnvdAddr()); err != nil {
		return fmt.Errorf("resume %s: %w; log: %s", s.ID, err, runtime.LogTail(filepath.Join(s.Dir, logFile), -1, 12))
	}
	d.put(v)
	d.log.Debug("resumed", "id", s.ID, "vm", l.vmID, "pid", v.proc.pid(), "took", time.Since(start))
	return nil
}

// load restores the snapshot into v's fresh Firecracker and lets the guest run.
func (d *Driver) load(ctx context.Context, v *vm, s runtime.Spec) error {
	err := v.api.LoadSnapshot(ctx, api.SnapshotLoad{
		SnapshotPath: v.lay.guest(filepath.Join(snapDir, stateFile)),
		MemBackend:   &api.MemoryBackend{BackendType: api.BackendUffd, BackendPath: v.lay.guest(uffdSock)},
		// Resumed separately, so the balloon can be deflated and the failure of either
		// step told apart.
		ResumeVM: false,
	})
	if err != nil {
		return err
	}
	if err := v.api.ResumeVM(ctx); err != nil {
		return err
	}
	// The guest gives the pages back to itself as it deflates; removed ranges read as
	// zeros through the uffd server from then on.
	if err := v.api.PatchBalloon(ctx, 0); err != nil {
		return fmt.Errorf("deflate balloon: %w", err)
	}
	// MMDS contents are not part of a snapshot.
	return v.api.PutMMDS(ctx, identity(s))
}
