package gvisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime"
)

// The sandbox reaches two host paths besides its overlay file: the socket dir it shares
// (root in the sandbox writes there at will) and its stdio log (envd's stdout, which root can
// reach through /proc/1/fd/1). Each is a small tmpfs of its own that the driver mounts, so a
// sandbox filling either gets ENOSPC and the host disk never notices. runsc's own log of the
// sandbox lives in the log tmpfs too; the debug logs (Config.Debug, an operator's choice) do not.
const (
	logsDir         = "logs"  // tmpfs: runscLog and stdioLog
	socketDirBytes  = 1 << 20 // the socket dir needs one socket file
	socketDirInodes = 64
	logsDirBytes    = 8 << 20 // the tail of the logs is what errors show; 8 MiB is plenty
	logsDirInodes   = 16
	logKeepBytes    = 2 << 20 // spawn empties a log above this (see runsc.spawn)
)

// hostMountSource names this driver's tmpfs mounts in /proc/self/mountinfo, so Reclaim finds
// them without knowing the sandbox dirs.
func (d *Driver) hostMountSource() string { return d.cfg.CgroupParent + "-tmpfs" }

// mountHostDirs mounts the socket dir and the log dir of s, each a size-limited tmpfs, unless
// they are mounted already (a Resume after a Pause in the same agent run).
func (d *Driver) mountHostDirs(s runtime.Spec) error {
	for _, m := range []struct {
		dir    string
		bytes  int64
		inodes int
	}{
		{hostSocketDir, socketDirBytes, socketDirInodes},
		{logsDir, logsDirBytes, logsDirInodes},
	} {
		p := filepath.Join(s.Dir, m.dir)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return err
		}
		mounted, err := isMountPoint(p)
		if err != nil || mounted {
			return err
		}
		opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", m.bytes, m.inodes)
		if err := unix.Mount(d.hostMountSource(), p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
			return fmt.Errorf("mount tmpfs at %s: %w", p, err)
		}
	}
	return nil
}

// unmountHostDirs undoes mountHostDirs; what is not mounted is skipped.
func unmountHostDirs(s runtime.Spec) error {
	var errs []error
	for _, dir := range []string{hostSocketDir, logsDir} {
		p := filepath.Join(s.Dir, dir)
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// isMountPoint tells whether p is on another filesystem than its parent. Both are dirs the
// agent made; the sandbox writes only inside p.
func isMountPoint(p string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(p), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}
