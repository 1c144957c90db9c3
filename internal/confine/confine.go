// Package confine opens and dials files in directories that a sandbox can write.
//
// Why: root inside a sandbox controls every entry of a directory the host shares with it
// (under gVisor, <sandbox dir>/runtime/envd is mounted at /run/hearth, and gVisor creates
// real host symlinks there). A host process that opens or connects to a path in such a
// directory by name would follow whatever the sandbox put there: a symlink to the Docker
// socket, to another sandbox's socket, to /etc/shadow. Everything here opens the entry
// without following any link and without leaving the directory (openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS), checks what it opened, and then
// works on that descriptor, so a swap of the entry after the check redirects nothing.
package confine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNotSocket is returned by Dial for an entry that exists but is no socket.
var ErrNotSocket = errors.New("not a socket")

// resolve is how every entry is looked up: beneath the directory, through no link.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenDir opens dir itself, refusing a symlink as its last component. dir is a directory
// the caller created (the sandbox can write inside it, not replace it).
func OpenDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// openAt opens name beneath the directory d with O_PATH: it names the inode without
// reading or writing it, and works on sockets.
func openAt(d *os.File, name string) (int, error) {
	for {
		fd, err := unix.Openat2(int(d.Fd()), name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: resolve,
		})
		if err == unix.EINTR || err == unix.EAGAIN { // EAGAIN: a rename raced the lookup
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "openat2", Path: filepath.Join(d.Name(), name), Err: err}
		}
		return fd, nil
	}
}

// Dial connects to the Unix socket at path, whose directory (filepath.Dir(path)) the
// caller created and the sandbox may write into. It fails, without connecting anywhere,
// when the entry is a symlink, is no socket (ErrNotSocket) or is missing.
func Dial(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	dir, err := OpenDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return DialAt(ctx, d, dir, filepath.Base(path))
}

// DialAt connects to the Unix socket name beneath the directory dir (from OpenDir); name
// may have several components but no symlink among them and no ".." out of dir.
func DialAt(ctx context.Context, d *net.Dialer, dir *os.File, name string) (net.Conn, error) {
	fd, err := openAt(dir, name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", filepath.Join(dir.Name(), name), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir.Name(), name), ErrNotSocket)
	}
	// connect(2) resolves the magic link to exactly the inode held by fd, whatever the
	// directory entry has become since; fd stays open until the dial has returned.
	if d == nil {
		d = &net.Dialer{}
	}
	c, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return c, nil
}

// Entry is one directory entry as ReadDir found it: lstat's type, never a link's target.
type Entry struct {
	Name string
	Type fs.FileMode
}

// ReadDir lists the directory dir (from OpenDir) without following any entry. A directory
// with more than max entries is an error: the sandbox decides how many there are, and the
// caller's memory should not.
func ReadDir(dir *os.File, max int) ([]Entry, error) {
	// An O_PATH descriptor cannot be read: open the directory itself for reading through it.
	rfd, err := unix.Openat2(int(dir.Fd()), ".", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolve,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "openat2", Path: dir.Name(), Err: err}
	}
	f := os.NewFile(uintptr(rfd), dir.Name())
	defer f.Close()
	des, err := f.ReadDir(max + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(des) > max {
		return nil, fmt.Errorf("%s holds more than %d entries", dir.Name(), max)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		out = append(out, Entry{Name: de.Name(), Type: de.Type()})
	}
	return out, nil
}
