package template

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// File operations the host makes in a root filesystem it does not trust (an image's, or one
// a build's steps changed as root): every path is resolved with RESOLVE_IN_ROOT, so a link
// such as /usr/bin -> /usr/bin or /etc -> / lands inside the rootfs, never on the host.

// inRootFS is an open root filesystem.
type inRootFS struct{ w rootWriter }

func openInRoot(rootfs string) (*inRootFS, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	return &inRootFS{w: rootWriter{root: root, links: map[string]bool{}}}, nil
}

func (r *inRootFS) Close() error { return unix.Close(r.w.root) }

// stat returns what p (absolute inside the rootfs) is, following links inside the rootfs.
func (r *inRootFS) stat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat2(r.w.root, strings.TrimPrefix(path.Clean(p), "/"), &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: inRoot})
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// isFile reports whether p is a regular file (through links inside the rootfs).
func (r *inRootFS) isFile(p string) bool {
	st, err := r.stat(p)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// mkdir makes directory p (and missing parents, root-owned) with mode perm when it is missing.
func (r *inRootFS) mkdir(p string, perm uint32) error {
	if _, err := r.w.openIn(p); err == nil {
		return nil
	}
	fd, err := r.w.mkdirAll(p)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return r.w.own(fd, "", perm, true)
}

// writeFile replaces p with a root-owned regular file of mode perm holding the bytes of src,
// written to a temp file in the same directory and renamed over p: a sandbox booting from
// the rootfs meanwhile sees the old file or the new one, and one still running keeps the
// old inode.
func (r *inRootFS) writeFile(p string, src io.Reader, perm uint32) error {
	p = path.Clean(p)
	dir, err := r.w.mkdirAll(path.Dir(p))
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	base := path.Base(p)
	tmp := "." + base + ".hearth-tmp"
	if err := removeAllAt(dir, tmp); err != nil {
		return err
	}
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	_, err = io.Copy(f, src)
	if err == nil {
		err = f.Chown(0, 0)
	}
	if err == nil {
		err = f.Chmod(os.FileMode(perm&0o777) | modeBits(perm))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var st unix.Stat_t
		if unix.Fstatat(dir, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = fmt.Errorf("a directory is in the way")
		}
	}
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, base)
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func modeBits(perm uint32) os.FileMode {
	var m os.FileMode
	if perm&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if perm&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if perm&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// readFile returns up to max bytes of the regular file p ("" and no error when it is missing).
func (r *inRootFS) readFile(p string, max int64) (string, error) {
	fd, err := unix.Openat2(r.w.root, strings.TrimPrefix(path.Clean(p), "/"), &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK, Resolve: inRoot})
	if err == unix.ENOENT {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, max))
	return string(b), err
}

// symlink replaces p (not a directory) with a symlink to target.
func (r *inRootFS) symlink(target, p string) error {
	parent, base, err := r.w.replaceable(path.Clean(p))
	if err != nil {
		return fmt.Errorf("symlink %s: %w", p, err)
	}
	defer unix.Close(parent)
	if err := unix.Symlinkat(target, parent, base); err != nil {
		return fmt.Errorf("symlink %s: %w", p, err)
	}
	return nil
}

// rename moves from to to, both in the same directory.
func (r *inRootFS) rename(dir, from, to string) error {
	fd, err := r.w.openIn(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Renameat(fd, from, fd, to); err != nil {
		return fmt.Errorf("rename %s/%s: %w", dir, from, err)
	}
	return nil
}

// removeMatching removes the non-directories in dir whose names match the path.Match
// pattern (a missing dir is no error).
func (r *inRootFS) removeMatching(dir, pattern string) error {
	fd, err := r.w.openIn(dir)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	names, err := readDirAt(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if ok, _ := path.Match(pattern, n); !ok {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		if err := unix.Unlinkat(fd, n, 0); err != nil && err != unix.ENOENT {
			return fmt.Errorf("remove %s/%s: %w", dir, n, err)
		}
	}
	return nil
}

// readlink returns the target of symlink p ("" when p is not one).
func (r *inRootFS) readlink(p string) string {
	fd, err := r.w.openIn(path.Dir(path.Clean(p)))
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(fd, path.Base(p), buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}
