package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/procs"
)

// Reclaim implements runtime.Driver: it SIGKILLs every QEMU whose -pidfile lies in this
// driver's run dir (VMs of an earlier run of this agent; no other agent's VMs match) and
// removes the pid files. Sandbox dirs, and so paused sandboxes' snapshots, are kept.
func (d *Driver) Reclaim(ctx context.Context) error {
	dir := runDir(d.cfg.DataDir) + "/"
	pids := procs.Find(func(a []string) bool { return procs.HasArg(a, "-pidfile", dir) })
	d.mu.Lock()
	for id, p := range d.procs {
		_ = p.cmd.Process.Kill()
		delete(d.procs, id)
	}
	d.mu.Unlock()
	var errs []error
	if len(pids) > 0 {
		wait := 10 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if !procs.KillAndWait(pids, wait) {
			errs = append(errs, fmt.Errorf("reclaim: qemu processes %v still alive after SIGKILL", pids))
		}
		d.log.Info("reclaim: killed leftover VMs", "count", len(pids))
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
