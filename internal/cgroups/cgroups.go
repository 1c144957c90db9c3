// Package cgroups finds this host's cgroup hierarchies and removes the cgroup trees that
// runtimes create per sandbox, killing whatever is left in them. Runtimes leave empty
// per-sandbox directories in every hierarchy after crashes and failed boots; agents reclaim
// them at start.
package cgroups

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// V1Root is where the v1 hierarchies are mounted.
const V1Root = "/sys/fs/cgroup"

// Hierarchies returns the mount points of every cgroup hierarchy: the v1 ones (cpu,
// memory, freezer, name=systemd, ...) and a hybrid v2 mount. runsc creates the container's
// cgroup in each of them, and a crashed or killed run leaves an empty directory in each.
func Hierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mountinfo: id parent maj:min root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	return out, sc.Err()
}

// Dirs returns the directories of cgroup path rel (e.g. "/hearth/sbx1") that exist.
func Dirs(rel string) []string {
	hs, _ := Hierarchies()
	var out []string
	for _, h := range hs {
		d := filepath.Join(h, rel)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// Remove kills every process left in cgroup rel and its children, in every hierarchy,
// then removes the directories, deepest first. Missing directories are fine.
func Remove(ctx context.Context, rel string) error {
	var errs []error
	for _, top := range Dirs(rel) {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := rmdir(ctx, d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdir empties cgroup dir d with SIGKILL and removes it; rmdir fails with EBUSY while
// a dying task is still attached, so it retries until ctx ends.
func rmdir(ctx context.Context, d string) error {
	for {
		for _, pid := range PIDs(d) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		err := syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w (still busy: %w)", d, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PIDs lists the processes in cgroup dir d.
func PIDs(d string) []int {
	b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, l := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(l); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
