package qemu

import (
	"context"
	"errors"
	"fmt"
	"github.com/hearthsh/hearth/internal/durable"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// snapConf is a snapshot's vm.json: the machine to restore into and what the pause did.
type snapConf struct {
	vmConf
	// Balloon records the reclaim before the vCPUs stopped.
	Balloon microvm.ReclaimResult `json:"balloon"`
	// BalloonError is why the reclaim failed; the snapshot is still complete without it.
	BalloonError string    `json:"balloon_error,omitempty"`
	StatusBefore string    `json:"status_before_save"`
	TakenAt      time.Time `json:"taken_at"`
	SaveMillis   int64     `json:"save_ms"`
}

// Pause implements runtime.Driver. The manager has synced and dropped the guest's caches
// through envd. Pause then inflates the balloon over what the guest does not use, stops the
// vCPUs, writes the device state with x-ignore-shared (guest RAM stays in the memory file),
// hard-links the memory file and the disk overlay next to it in snapshot.tmp, renames that to
// snapshot, and only then quits QEMU. Any error before the rename resumes the vCPUs and
// deflates the balloon, leaving the sandbox running as before.
func (d *Driver) Pause(ctx context.Context, s runtime.Spec) error {
	if err := d.pause(ctx, s); err != nil {
		return fmt.Errorf("pause %s: %w", s.ID, err)
	}
	return nil
}

func (d *Driver) pause(ctx context.Context, s runtime.Spec) (err error) {
	var conf snapConf
	if err := readJSON(filepath.Join(s.Dir, vmConfFile), &conf.vmConf); err != nil {
		return fmt.Errorf("no running VM: %w", err)
	}
	if strings.ContainsAny(s.Dir, `'"\`+"\n") {
		return fmt.Errorf("sandbox dir %q has quotes or backslashes", s.Dir)
	}
	q, err := d.qmpFor(ctx, s)
	if err != nil {
		return fmt.Errorf("no running VM: %w", err)
	}
	defer q.close()
	ram := int64(conf.MemoryMiB) << 20
	b := qmpBalloon{q}
	final := filepath.Join(s.Dir, snapshotDir)
	tmp := final + tmpSuffix
	stopped := false
	defer func() {
		if err == nil {
			return
		}
		_ = os.RemoveAll(tmp)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if stopped {
			if cerr := q.exec(rctx, "cont", nil, nil); cerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", cerr))
			}
		}
		if berr := b.SetTarget(rctx, ram); berr != nil {
			err = errors.Join(err, fmt.Errorf("roll back balloon: %w", berr))
		}
	}()

	if !d.cfg.NoBalloon {
		conf.Balloon, err = microvm.ReclaimMemory(ctx, b, d.cfg.Reclaim)
		if err != nil {
			// The reclaim only makes the snapshot smaller; the pause goes on without it.
			conf.BalloonError = err.Error()
			d.log.Warn("balloon reclaim failed; snapshot taken without it", "id", s.ID, "err", err)
			err = nil
		}
	} else {
		conf.Balloon.Skipped = "disabled"
	}
	if err := q.exec(ctx, "migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
		{"capability": "x-ignore-shared", "state": true},
	}}, nil); err != nil {
		return err
	}
	if err := q.exec(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	start := time.Now()
	if err := q.exec(ctx, "stop", nil, nil); err != nil {
		return err
	}
	stopped = true
	if conf.StatusBefore, err = q.status(ctx); err != nil {
		return err
	}
	if err := q.exec(ctx, "migrate", map[string]any{"uri": "exec:cat > '" + filepath.Join(tmp, stateFile) + "'"}, nil); err != nil {
		return err
	}
	if err := waitMigration(ctx, q); err != nil {
		return err
	}
	conf.SaveMillis = time.Since(start).Milliseconds()
	conf.TakenAt = time.Now().UTC()
	// QEMU keeps the files open and mapped; new names for the same inodes make them the
	// snapshot without a copy. The VM stays stopped until it quits, so they do not change.
	for _, f := range []string{memFile, diskFile} {
		if err := os.Link(filepath.Join(s.Dir, f), filepath.Join(tmp, f)); err != nil {
			return err
		}
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
	d.log.Debug("paused", "id", s.ID, "balloon_before", conf.Balloon.Before>>20, "balloon_after", conf.Balloon.After>>20,
		"save_ms", conf.SaveMillis)
	return nil
}

// waitMigration polls query-migrate until the outgoing migration completed.
func waitMigration(ctx context.Context, q *qmp) error {
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.exec(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("save device state: migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = q.exec(context.WithoutCancel(ctx), "migrate_cancel", nil, nil)
			return fmt.Errorf("save device state: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
