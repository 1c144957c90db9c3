package gvisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/procs"
	"github.com/hearthsh/hearth/internal/runtime"

	"github.com/hearthsh/hearth/internal/cgroups"

	"golang.org/x/sys/unix"
)

// Reclaim removes everything a previous run of this agent left under its runsc root: it
// kills and deletes every container runsc still knows, SIGKILLs any runsc process (sandbox,
// gofer, or a runsc call cut off mid-way) started with this root, removes every cgroup below
// the agent's cgroup parent in every hierarchy, and unmounts the nsfs mounts runsc leaves in
// its root (null-netns) and the sandboxes' socket and log tmpfs mounts (mountHostDirs).
// Sandbox data dirs (and so paused sandboxes' snapshots) are kept.
func (d *Driver) Reclaim(ctx context.Context) error {
	var errs []error
	ids, err := d.runsc.list(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("reclaim: %w", err))
	}
	for _, id := range ids {
		_, _ = d.runsc.output(ctx, runtime.Spec{}, "kill", id, "KILL")
	}
	for _, id := range ids {
		if err := d.runsc.stopAndDelete(ctx, id); err != nil {
			d.log.Warn("reclaim: delete container", "id", id, "err", err)
			errs = append(errs, fmt.Errorf("reclaim %s: %w", id, err))
		}
	}
	if n := killRootProcesses(d.runsc.root); n > 0 {
		d.log.Info("reclaim: killed leftover runsc processes", "count", n)
	}
	if err := cgroups.Remove(ctx, "/"+d.cfg.CgroupParent); err != nil {
		errs = append(errs, fmt.Errorf("reclaim cgroups: %w", err))
	}
	if err := unmountUnder(d.runsc.root); err != nil {
		errs = append(errs, fmt.Errorf("reclaim mounts: %w", err))
	}
	// The sandboxes' socket and log tmpfs (mountHostDirs): Resume mounts them again.
	if err := unmountWhere(func(mp, source string) bool { return source == d.hostMountSource() }); err != nil {
		errs = append(errs, fmt.Errorf("reclaim mounts: %w", err))
	}
	// State files of containers whose delete failed would make the next create of the same
	// ID fail; the processes are dead by now, so they can go.
	if err := clearStateDir(d.runsc.root); err != nil {
		errs = append(errs, fmt.Errorf("reclaim state: %w", err))
	}
	if len(ids) > 0 {
		d.log.Info("reclaim: removed leftover sandboxes", "count", len(ids))
	}
	return errors.Join(errs...)
}

// killRootProcesses SIGKILLs every process whose command line passes root as runsc's --root,
// waits briefly for them to go, and returns how many there were. Matching on this agent's
// own root dir never touches another agent's or anyone else's runsc.
func killRootProcesses(root string) int {
	pids := rootProcesses(root)
	procs.KillAndWait(pids, 3*time.Second)
	return len(pids)
}

// rootProcesses returns the pids of processes run with `--root root` or `--root=root`.
func rootProcesses(root string) []int {
	return procs.Find(func(args []string) bool { return hasRoot(args, root) })
}

// hasRoot reports whether a runsc command line passes root as --root.
func hasRoot(args []string, root string) bool {
	for i, a := range args {
		if a == "--root="+root || (a == "--root" && i+1 < len(args) && args[i+1] == root) {
			return true
		}
	}
	return false
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	return unmountWhere(func(mp, _ string) bool { return strings.HasPrefix(mp, dir+"/") })
}

// unmountWhere lazily unmounts every mount point that match accepts, deepest first.
func unmountWhere(match func(mountPoint, source string) bool) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mount ID, parent ID, dev, root, mount point, options..., "-", fstype, source, ...
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) > 4 && sep > 4 && sep+2 < len(fields) && match(fields[4], fields[sep+2]) {
			mps = append(mps, fields[4])
		}
	}
	var errs []error
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mps[i], err))
		}
	}
	return errors.Join(errs...)
}

// clearStateDir removes every entry of runsc's root dir; only called once nothing runs.
func clearStateDir(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
