package template

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// An image layer is as hostile as a COPY archive (see archive.go): it comes from whatever
// registry the build names. applyLayer writes one into a root filesystem with the same rules
// (every path resolved with RESOLVE_IN_ROOT, the last component never followed, nothing
// escapes the rootfs) plus what layers need and COPY refuses: owners and modes from the
// archive, hard links (resolved inside the rootfs too) and OCI whiteouts.

// OCI whiteout markers (image-spec layer.md): ".wh.NAME" deletes NAME of the lower layers,
// ".wh..wh..opq" empties its directory of the lower layers' entries.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// layerWriter applies the layers of one image, in order, to a root filesystem.
type layerWriter struct {
	// rootWriter's left is the cap on the content the whole image writes, all layers.
	rootWriter
	skipped int // device nodes and FIFOs, which a sandbox makes itself
	// entriesLeft caps the entries of all layers: empty files and directories cost inodes
	// and time, not bytes.
	entriesLeft int
}

func newLayerWriter(rootfs string, maxBytes int64, maxEntries int) (*layerWriter, error) {
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, fmt.Errorf("make root filesystem: %w", err)
	}
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	return &layerWriter{rootWriter: rootWriter{root: root, left: maxBytes,
		source: "layer", overLimit: "the image unpacks to more than its limit"}, entriesLeft: maxEntries}, nil
}

func (w *layerWriter) Close() error { return unix.Close(w.root) }

// layerPath cleans a layer entry's name into an absolute path inside the rootfs. A leading
// "/" is dropped (some tools write absolute names; Docker reads them relative to the root);
// a name that climbs out with ".." is refused.
func layerPath(name string) (string, error) {
	if name == "" || strings.Contains(name, "\x00") {
		return "", fmt.Errorf("%w: entry with an empty or invalid name", ErrHostileArchive)
	}
	n := strings.TrimLeft(name, "/")
	if n == "" {
		return "/", nil
	}
	c := path.Clean(n)
	if !localPath(c) {
		return "", fmt.Errorf("%w: entry %q is not a path inside the image", ErrHostileArchive, name)
	}
	return path.Join("/", c), nil
}

// apply writes the tar stream r, one layer, into the rootfs. ctx is checked between entries.
func (w *layerWriter) apply(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	// written are the paths this layer wrote: an opaque whiteout only hides the lower
	// layers' entries, never its own layer's.
	written := map[string]bool{}
	var opaque []string
	w.links = map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		if w.entriesLeft--; w.entriesLeft < 0 {
			return fmt.Errorf("%w: the image has more entries than its limit", ErrHostileArchive)
		}
		target, err := layerPath(h.Name)
		if err != nil {
			return err
		}
		dir, base := path.Dir(target), path.Base(target)
		switch {
		case base == whiteoutOpaque:
			opaque = append(opaque, dir)
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			victim := strings.TrimPrefix(base, whiteoutPrefix)
			if victim == "" || victim == "." || victim == ".." {
				return fmt.Errorf("%w: whiteout %q names no entry", ErrHostileArchive, h.Name)
			}
			if err := w.whiteout(dir, victim); err != nil {
				return fmt.Errorf("whiteout %s: %w", h.Name, err)
			}
			continue
		}
		if err := w.layerEntry(h, target, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		for p := target; p != "/"; p = path.Dir(p) {
			written[p] = true
		}
	}
	for _, dir := range opaque {
		if err := w.opaque(dir, written); err != nil {
			return fmt.Errorf("opaque whiteout in %s: %w", dir, err)
		}
	}
	return nil
}

// whiteout removes name in dir (resolved inside the rootfs; a missing one is no error).
func (w *layerWriter) whiteout(dir, name string) error {
	if err := w.underOwnLink(path.Join(dir, name)); err != nil {
		return err
	}
	fd, err := w.openIn(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return removeAllAt(fd, name)
}

// opaque empties dir of every entry this layer did not write, at any depth: the lower
// layers' files under a directory this layer also wrote go too.
func (w *layerWriter) opaque(dir string, written map[string]bool) error {
	fd, err := w.openIn(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return opaqueAt(fd, dir, written)
}

func opaqueAt(fd int, dir string, written map[string]bool) error {
	names, err := readDirAt(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if !written[p] {
			if err := removeAllAt(fd, n); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", p, err)
		}
		err = opaqueAt(sub, p, written)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// layerEntry creates one entry, replacing whatever the lower layers had there (a directory
// stays a directory when the entry is one, and takes the entry's owner and mode).
func (w *layerWriter) layerEntry(h *tar.Header, target string, body io.Reader) error {
	if err := w.underOwnLink(target); err != nil {
		return err
	}
	w.uid, w.gid = h.Uid, h.Gid
	perm := uint32(h.Mode) & 0o7777
	if target == "/" {
		if h.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: a non-directory cannot replace the root directory", ErrHostileArchive)
		}
		return w.own(w.root, "", perm, true)
	}
	// Parents missing from the layer are made root-owned, as Docker does.
	w.uid, w.gid = 0, 0
	parent, err := w.mkdirAll(path.Dir(target))
	w.uid, w.gid = h.Uid, h.Gid
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	base := path.Base(target)
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
	case err != nil:
		return fmt.Errorf("stat: %w", err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR && h.Typeflag == tar.TypeDir:
		fd, err := unix.Openat(parent, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
		return w.own(fd, "", perm, true)
	default:
		if err := removeAllAt(parent, base); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, base, 0o700); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		fd, err := unix.Openat(parent, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
		return w.own(fd, "", perm, true)
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archivers still write TypeRegA
		return w.createFile(parent, base, target, h.Size, body, h.Uid, h.Gid, perm)
	case tar.TypeSymlink:
		return w.symlink(parent, base, target, h.Linkname, h.Uid, h.Gid)
	case tar.TypeLink:
		// The link's target is a path in the image, resolved inside the rootfs like any
		// other, and never the symlink's target: the link is to the entry itself.
		src, err := layerPath(h.Linkname)
		if err != nil || src == "/" {
			return fmt.Errorf("%w: hard link to %q", ErrHostileArchive, h.Linkname)
		}
		sp, err := w.openIn(path.Dir(src))
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", h.Linkname, err)
		}
		defer unix.Close(sp)
		if err := unix.Fstatat(sp, path.Base(src), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("hard link to %s: %w", h.Linkname, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%w: hard link to a directory", ErrHostileArchive)
		}
		if err := unix.Linkat(sp, path.Base(src), parent, base, 0); err != nil {
			return fmt.Errorf("hard link to %s: %w", h.Linkname, err)
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// A sandbox gets its own /dev; device nodes in an image are left out.
		w.skipped++
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("%w: entry type %q is not supported", ErrHostileArchive, string(h.Typeflag))
	}
}

// removeAllAt removes name in the directory dirfd and, for a directory, all it holds,
// never following a symlink.
func removeAllAt(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == unix.ENOENT {
		return nil
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && err != unix.ENOENT {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	names, err := readDirAt(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// readDirAt lists the directory fd (an O_PATH one is reopened for reading).
func readDirAt(fd int) ([]string, error) {
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	f := os.NewFile(uintptr(d), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	return names, nil
}
