package files

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/envd/filesystem"
	"github.com/hearthsh/hearth/internal/envd/identity"
)

// newFileMode is the mode of uploaded files that did not exist before, as a shell with the
// usual umask 022 would create them. An overwritten file keeps its mode.
const newFileMode = 0o644

// staged is an upload written to a temporary file in its destination's directory, ready to
// be renamed over the destination. Staging there keeps the rename on one filesystem whatever
// is mounted where; watchers recognise the staging name (filesystem.StagingPattern), hide it
// and report the upload as E2B's in-place write.
type staged struct {
	user identity.User
	tmp  string
	dest string
}

// stage writes body to a temporary file next to dest, as u: missing parent directories are
// created owned by u, and the file is owned by u. The destination itself is untouched until
// commit. On error nothing is left behind.
func stage(u identity.User, dest string, body io.Reader, md map[string]string) (*staged, *httpError) {
	var tmp *os.File
	mode := os.FileMode(newFileMode)
	replace := false
	err := identity.Do(u, func() error {
		// Writing through a symlink replaces its target, as writing to the path would.
		if resolved, err := filepath.EvalSymlinks(dest); err == nil {
			dest = resolved
		}
		if err := identity.MkdirAll(u, filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		if fi, err := os.Stat(dest); err == nil {
			if fi.IsDir() {
				return &httpError{http.StatusBadRequest, fmt.Errorf("path %s is a directory; name a file inside it", dest)}
			}
			// Renaming needs only the directory to be writable; check the user may write
			// the file itself so an upload cannot replace a file they could not modify.
			f, err := os.OpenFile(dest, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_ = f.Close()
			mode, replace = fi.Mode().Perm(), true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		var err error
		if tmp, err = os.CreateTemp(filepath.Dir(dest), filesystem.StagingPattern(dest, replace)); err != nil {
			return err
		}
		if err := identity.Own(u, tmp); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return err
		}
		return nil
	})
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, he
		}
		return nil, statusFor("write", dest, err)
	}
	s := &staged{user: u, tmp: tmp.Name(), dest: dest}
	if herr := s.fill(tmp, body, mode, md); herr != nil {
		_ = tmp.Close()
		s.discard()
		return nil, herr
	}
	if err := tmp.Close(); err != nil {
		s.discard()
		return nil, statusFor("write", dest, err)
	}
	return s, nil
}

// fill copies the body into the temporary file and sets its mode and metadata. It runs with
// envd's credentials: the descriptor is already open, and fsetxattr/fchmod on a file the user
// owns are what the user could do too.
func (s *staged) fill(f *os.File, body io.Reader, mode os.FileMode, md map[string]string) *httpError {
	if _, err := io.Copy(f, readerOnly{body}); err != nil {
		var re readError
		if errors.As(err, &re) {
			return &httpError{http.StatusBadRequest, fmt.Errorf("read upload for %s: %w; nothing was written", s.dest, re.err)}
		}
		return statusFor("write", s.dest, err)
	}
	if err := f.Chmod(mode); err != nil {
		return statusFor("set mode of", s.dest, err)
	}
	for k, v := range md {
		if err := unix.Fsetxattr(int(f.Fd()), filesystem.MetadataPrefix+k, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				return &httpError{http.StatusBadRequest, fmt.Errorf("store metadata on %s: the filesystem does not support extended attributes", s.dest)}
			}
			if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ERANGE) {
				return &httpError{http.StatusBadRequest, fmt.Errorf("store metadata on %s: too large for the filesystem (%v)", s.dest, err)}
			}
			return statusFor("store metadata on", s.dest, err)
		}
	}
	return nil
}

// commit atomically replaces the destination with the staged file.
func (s *staged) commit() *httpError {
	err := identity.Do(s.user, func() error { return os.Rename(s.tmp, s.dest) })
	if err != nil {
		s.discard()
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return statusFor("write", s.dest, err)
	}
	return nil
}

// discard removes the temporary file. envd's own credentials suffice: the file is envd's
// creation and may sit in a directory the user can no longer write.
func (s *staged) discard() { _ = os.Remove(s.tmp) }

// readerOnly hides the body's WriterTo so io.Copy reads through it and tags read errors,
// which are the client's fault, apart from write errors, which are the disk's.
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, readError{err}
	}
	return n, err
}

type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }
