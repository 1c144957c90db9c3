package template

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// An archive of a COPY step comes from the API's caller: every entry is hostile input. It is
// written into the build's root filesystem so that nothing lands outside it:
//   - entry names must be local paths (no absolute names, no "..");
//   - every path is resolved with openat2(RESOLVE_IN_ROOT) against the root filesystem, so a
//     symlink that an earlier step left there (`ln -s / /app`, `ln -s /etc x`) resolves
//     inside the rootfs, as it would in the sandbox, never on the host;
//   - a symlink the archive itself creates is never written through by a later entry of the
//     same archive (no "link, then link/file" tricks);
//   - the last component is created with O_EXCL|O_NOFOLLOW after removing what was there, so
//     a file is never opened through a link;
//   - hard links, devices and FIFOs are refused, and the bytes written are capped.

// CopyOptions describe one COPY step (E2B: `COPY src dest owner mode`).
type CopyOptions struct {
	// Src is the step's source pattern, relative to the build context ("folder/*", "a.txt").
	Src string
	// Dest is the absolute target path inside the root filesystem. A Dest ending in "/"
	// means "into that directory" for a single file.
	Dest string
	// UID and GID own everything the copy writes.
	UID, GID int
	// Mode, when not 0, replaces the permission bits (setuid, setgid and sticky included) of
	// every file and directory copied.
	Mode uint32
	// MaxBytes caps the bytes of file content written; 0 means DefaultCopyMaxBytes.
	MaxBytes int64
}

// DefaultCopyMaxBytes caps one COPY's extracted content.
const DefaultCopyMaxBytes = 8 << 30

// ErrHostileArchive is wrapped by the errors about entries the copy refuses.
var ErrHostileArchive = errors.New("archive refused")

// sourcePrefix is the part of a COPY source pattern before its first glob character, as a
// clean relative path: "folder/*" → "folder", "*.txt" → ".", "a/b.txt" → "a/b.txt". The SDK
// stores matched files under their paths in the context, so this is the archive subtree the
// step copies.
func sourcePrefix(src string) (string, error) {
	s := src + "/"
	if i := strings.IndexAny(s, "*?[{"); i >= 0 {
		s = s[:i]
		if j := strings.LastIndex(s, "/"); j >= 0 {
			s = s[:j]
		} else {
			s = "."
		}
	}
	p := path.Clean(strings.TrimPrefix(s, "./"))
	if p == "" || !localPath(p) {
		return "", fmt.Errorf("COPY source %q must be a relative path inside the build context", src)
	}
	return p, nil
}

// localPath reports whether p (slash-separated, clean) stays below its root.
func localPath(p string) bool {
	return p == "." || (!path.IsAbs(p) && p != ".." && !strings.HasPrefix(p, "../"))
}

// openArchive returns a tar reader over r, gunzipping it when it starts with gzip's magic.
func openArchive(r io.Reader) (*tar.Reader, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return tar.NewReader(zr), nil
	}
	return tar.NewReader(br), nil
}

// CopyArchive writes the part of the tar (or tar.gz) archive r that o.Src selects into the
// root filesystem rootfs at o.Dest, with E2B's COPY semantics: a single file goes to the
// exact target (or into it when Dest ends in "/"), a directory's contents merge into the
// target, symlinks stay symlinks with their link text as is (dangling or absolute ones
// included: they are only ever followed inside the sandbox).
func CopyArchive(r io.Reader, rootfs string, o CopyOptions) error {
	src, err := sourcePrefix(o.Src)
	if err != nil {
		return err
	}
	if !path.IsAbs(o.Dest) {
		return fmt.Errorf("COPY target %q is not absolute", o.Dest)
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultCopyMaxBytes
	}
	tr, err := openArchive(r)
	if err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root filesystem: %w", err)
	}
	defer unix.Close(root)
	w := &rootWriter{root: root, uid: o.UID, gid: o.GID, mode: o.Mode, left: o.MaxBytes, links: map[string]bool{},
		source: "archive", overLimit: "the copy writes more than its limit"}
	dest := path.Clean(o.Dest)
	intoDir := strings.HasSuffix(o.Dest, "/")
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Name == "" || !localPath(name) || strings.Contains(h.Name, "\x00") {
			return fmt.Errorf("%w: entry %q is not a relative path inside the archive", ErrHostileArchive, h.Name)
		}
		var target string
		switch {
		case src == ".":
			target = path.Join(dest, name)
		case name == src && h.Typeflag != tar.TypeDir && intoDir:
			target = path.Join(dest, path.Base(name))
		case name == src:
			target = dest
		case strings.HasPrefix(name, src+"/"):
			target = path.Join(dest, strings.TrimPrefix(name, src+"/"))
		default:
			continue // a leading directory of the source, or another step's file
		}
		if name == "." && src == "." {
			target = dest
		}
		found = true
		if err := w.entry(h, target, tr); err != nil {
			return fmt.Errorf("copy %s to %s: %w", h.Name, target, err)
		}
	}
	if !found {
		return fmt.Errorf("Error: source path does not exist: %s", src)
	}
	return nil
}

// rootWriter creates entries inside a root filesystem through RESOLVE_IN_ROOT lookups. It
// is what COPY steps (entry) and image layers (layerWriter) share: the lookups, the checks
// against the archive's own symlinks, and the creation of files and symlinks.
type rootWriter struct {
	root     int
	uid, gid int
	mode     uint32
	left     int64
	// links are the targets this archive made symlinks: nothing is written beneath them.
	links map[string]bool
	// source names the archive in errors ("archive", "layer"); overLimit says what went
	// over left.
	source, overLimit string
}

const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// underOwnLink refuses p when it lies beneath a symlink this archive created: writing
// through it would follow link text the archive chose ("link, then link/file").
func (w *rootWriter) underOwnLink(p string) error {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if w.links[d] {
			return fmt.Errorf("%w: it lies beneath %s, a symlink this %s created", ErrHostileArchive, d, w.source)
		}
	}
	return nil
}

// createFile writes the size bytes of body as a new regular file base in the directory
// parent (nothing may be there: O_EXCL|O_NOFOLLOW), owned by uid:gid with perm, and counts
// them against left.
func (w *rootWriter) createFile(parent int, base, target string, size int64, body io.Reader, uid, gid int, perm uint32) error {
	if size > w.left {
		return fmt.Errorf("%w: %s", ErrHostileArchive, w.overLimit)
	}
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), target)
	n, err := io.Copy(f, io.LimitReader(body, size))
	w.left -= n
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	// Owner first: chown clears set-user-ID and set-group-ID, which perm then sets.
	if err == nil {
		if err = unix.Fchown(fd, uid, gid); err != nil {
			err = fmt.Errorf("chown: %w", err)
		}
	}
	if err == nil {
		if err = unix.Fchmod(fd, perm); err != nil {
			err = fmt.Errorf("chmod: %w", err)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// symlink makes base in the directory parent a symlink to link (its text kept as is: it is
// only ever followed inside the sandbox), owned by uid:gid, and remembers target as one of
// the archive's own.
func (w *rootWriter) symlink(parent int, base, target, link string, uid, gid int) error {
	if link == "" || strings.Contains(link, "\x00") {
		return fmt.Errorf("%w: symlink without a valid target", ErrHostileArchive)
	}
	if err := unix.Symlinkat(link, parent, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	w.links[target] = true
	if err := unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown symlink: %w", err)
	}
	return nil
}

func (w *rootWriter) entry(h *tar.Header, target string, body io.Reader) error {
	if err := w.underOwnLink(target); err != nil {
		return err
	}
	perm := uint32(h.Mode) & 0o7777
	if w.mode != 0 {
		perm = w.mode & 0o7777
	}
	switch h.Typeflag {
	case tar.TypeDir:
		// A directory that exists keeps its owner and mode (the target of a merge, /, /usr):
		// only the directories the copy creates take the archive's.
		if fd, err := w.openIn(target); err == nil {
			unix.Close(fd)
			return nil
		}
		fd, err := w.mkdirAll(target)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return w.own(fd, "", perm, true)
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archivers still write TypeRegA
		if h.Size > w.left { // before replaceable removes what is there
			return fmt.Errorf("%w: %s", ErrHostileArchive, w.overLimit)
		}
		parent, base, err := w.replaceable(target)
		if err != nil {
			return err
		}
		defer unix.Close(parent)
		return w.createFile(parent, base, target, h.Size, body, w.uid, w.gid, perm)
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.Contains(h.Linkname, "\x00") { // before replaceable removes what is there
			return fmt.Errorf("%w: symlink without a valid target", ErrHostileArchive)
		}
		parent, base, err := w.replaceable(target)
		if err != nil {
			return err
		}
		defer unix.Close(parent)
		return w.symlink(parent, base, target, h.Linkname, w.uid, w.gid)
	case tar.TypeLink:
		return fmt.Errorf("%w: hard links are not supported (archive %s → %s)", ErrHostileArchive, h.Name, h.Linkname)
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("%w: entry type %q (devices, FIFOs and the like) is not supported", ErrHostileArchive, string(h.Typeflag))
	}
}

// own sets the owner and permission bits of the open file fd (name "") or of name in the
// directory fd.
func (w *rootWriter) own(fd int, name string, perm uint32, chmod bool) error {
	if err := unix.Fchownat(fd, name, w.uid, w.gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if !chmod {
		return nil
	}
	// fchmod does not take an O_PATH descriptor; /proc/self/fd does, for the inode itself.
	if err := unix.Fchmodat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), perm, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// openIn resolves p (absolute, inside the rootfs) as a directory, through the rootfs's own
// symlinks but never out of it.
func (w *rootWriter) openIn(p string) (int, error) {
	if p == "/" {
		return unix.Dup(w.root)
	}
	for {
		fd, err := unix.Openat2(w.root, strings.TrimPrefix(p, "/"), &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: inRoot,
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// mkdirAll returns the directory p, creating what is missing (owned by the copy's owner).
func (w *rootWriter) mkdirAll(p string) (int, error) {
	if p == "/" {
		return unix.Dup(w.root)
	}
	fd, err := w.openIn(p)
	if err == nil {
		return fd, nil
	}
	if err != unix.ENOENT {
		return -1, fmt.Errorf("open %s: %w", p, err)
	}
	parent, err := w.mkdirAll(path.Dir(p))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	base := path.Base(p)
	if err := unix.Mkdirat(parent, base, 0o755); err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("mkdir %s: %w", p, err)
	}
	if err := unix.Fchownat(parent, base, w.uid, w.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, fmt.Errorf("chown %s: %w", p, err)
	}
	fd, err = unix.Openat2(parent, base, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	if err == unix.ENOTDIR || err == unix.ELOOP {
		return -1, fmt.Errorf("%s is a symlink to nothing inside the root filesystem, or not a directory", p)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", p, err)
	}
	return fd, nil
}

// replaceable returns the directory that will hold target and target's name in it, with
// any non-directory already there removed (Docker overwrites files on COPY).
func (w *rootWriter) replaceable(target string) (int, string, error) {
	if target == "/" {
		return -1, "", fmt.Errorf("%w: a file cannot replace the root directory", ErrHostileArchive)
	}
	parent, err := w.mkdirAll(path.Dir(target))
	if err != nil {
		return -1, "", err
	}
	base := path.Base(target)
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
	case err != nil:
		unix.Close(parent)
		return -1, "", fmt.Errorf("stat: %w", err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		unix.Close(parent)
		return -1, "", fmt.Errorf("a directory is in the way")
	default:
		if err := unix.Unlinkat(parent, base, 0); err != nil {
			unix.Close(parent)
			return -1, "", fmt.Errorf("replace: %w", err)
		}
	}
	return parent, base, nil
}
