package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/procs"

	"github.com/hearthsh/hearth/internal/cgroups"

	"github.com/hearthsh/hearth/internal/runtime"
)

// Destroy implements runtime.Driver. A VM this process started is killed and reaped; one
// left by an earlier run of the agent is found by its --id and killed.
func (d *Driver) Destroy(ctx context.Context, s runtime.Spec) error {
	var errs []error
	if v := d.take(s.ID); v != nil {
		errs = append(errs, d.stop(ctx, v))
	} else if s.ID != "" {
		l, err := d.newLayout(s.ID)
		if err == nil {
			d.killVMs(func(id string) bool { return id == l.vmID })
			errs = append(errs, d.stop(ctx, &vm{id: s.ID, lay: l}))
		}
	}
	if s.Dir != "" {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy %s: %w", s.ID, err)
	}
	return nil
}

// Reclaim implements runtime.Driver: it kills every Firecracker (and jailer or nsenter on
// its way to becoming one) whose --id carries this agent's prefix, removes every VM root
// under RunDir and every cgroup under the jailer's parent. Sandbox dirs, and so paused
// sandboxes' snapshots and disks, are kept.
func (d *Driver) Reclaim(ctx context.Context) error {
	prefix := d.cfg.IDPrefix + "-"
	if n := d.killVMs(func(id string) bool { return strings.HasPrefix(id, prefix) }); n > 0 {
		d.log.Info("reclaim: killed leftover VMs", "count", n)
	}
	var errs []error
	if err := cgroups.Remove(ctx, d.cfg.CgroupParent); err != nil {
		errs = append(errs, fmt.Errorf("reclaim cgroups: %w", err))
	}
	ents, err := os.ReadDir(d.cfg.RunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d.cfg.RunDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("reclaim: %w", err))
		}
	}
	return errors.Join(errs...)
}

// killVMs SIGKILLs the VM processes whose --id match, waits briefly for them to go, and
// returns how many there were. Only the firecracker, jailer and nsenter binaries are
// considered, so no other program that happens to take an --id flag is touched.
func (d *Driver) killVMs(match func(vmID string) bool) int {
	names := map[string]bool{"nsenter": true, filepath.Base(d.cfg.Firecracker): true}
	if d.cfg.Jailer != "" {
		names[filepath.Base(d.cfg.Jailer)] = true
	}
	pids := procs.Find(func(args []string) bool {
		id, ok := flagValue(args, "--id")
		return ok && names[filepath.Base(args[0])] && match(id)
	})
	procs.KillAndWait(pids, 3*time.Second)
	return len(pids)
}

// flagValue returns the value of flag in args ("--id x" or "--id=x").
func flagValue(args []string, flag string) (string, bool) {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}
