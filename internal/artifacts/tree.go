package artifacts

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A directory tree (a template's rootfs) travels as one object: a tar written by PackTree,
// the same bytes for the same tree (entries sorted, no host-dependent fields), so hosts
// holding one build store one object. It keeps what a root filesystem needs: owners, modes
// (setuid included), modification times, symlinks, hard links and device nodes. Extended
// attributes (file capabilities) are not kept.
//
// Two other tar writers exist and are not this one on purpose: the SDK's COPY packer
// (sdk/go PackCopy) zeroes owners, refuses devices, writes no hard links and hashes as it
// packs, and may not import internal packages; the template package's writer of hostile
// archives (COPY steps, image layers) merges into an existing rootfs through its symlinks
// and reads OCI whiteouts, while a tree goes into a new, empty root and must come back whole,
// device nodes, modification times and names like ".wh.x" included.

// PackTree writes a tar of the tree at root to w.
func PackTree(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{} // (dev, inode) of files with several links -> first name
	err := walkSorted(root, "", func(rel string, fi fs.FileInfo) error {
		st, _ := fi.Sys().(*syscall.Stat_t)
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			var err error
			if target, err = os.Readlink(filepath.Join(root, rel)); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime = fi.ModTime().Truncate(time.Second)
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if st != nil {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				} else {
					links[key] = rel
				}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(filepath.Join(root, rel))
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", root, err)
	}
	return tw.Close()
}

// walkSorted calls fn for every entry under root (not root itself), parents before children,
// names in byte order.
func walkSorted(root, rel string, fn func(rel string, fi fs.FileInfo) error) error {
	ents, err := os.ReadDir(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	for _, n := range names {
		r := path.Join(rel, n)
		fi, err := os.Lstat(filepath.Join(root, r))
		if err != nil {
			return err
		}
		if err := fn(r, fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := walkSorted(root, r, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// UnpackTree extracts a tar made by PackTree into root, which must not exist yet. It never
// writes outside root: names must be local, and no entry may go through a symlink the
// archive made (the only links under a new root are its own).
func UnpackTree(r io.Reader, root string) error {
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	tr := tar.NewReader(r)
	symlinks := map[string]bool{}
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !filepath.IsLocal(name) || path.Clean(name) != name {
			return fmt.Errorf("unpack: entry %q is not a local path", hdr.Name)
		}
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			if symlinks[p] {
				return fmt.Errorf("unpack: entry %q goes through symlink %q", hdr.Name, p)
			}
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		mode := hdr.FileInfo().Mode()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(dst, 0o700); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			dirs = append(dirs, dirTime{dst, hdr.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		case tar.TypeLink:
			old := hdr.Linkname
			if !filepath.IsLocal(old) || symlinks[old] {
				return fmt.Errorf("unpack: hard link %q to %q outside the tree", hdr.Name, old)
			}
			if err := os.Link(filepath.Join(root, filepath.FromSlash(old)), dst); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			continue // shares the first name's owner, mode and times
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			symlinks[name] = true
			if err := os.Lchown(dst, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			continue
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := uint32(unix.S_IFCHR)
			switch hdr.Typeflag {
			case tar.TypeBlock:
				kind = unix.S_IFBLK
			case tar.TypeFifo:
				kind = unix.S_IFIFO
			}
			dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
			if err := unix.Mknod(dst, kind|0o600, int(dev)); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		default:
			return fmt.Errorf("unpack: entry %q of unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		// Owner first: chown clears setuid and setgid bits, which the mode then sets.
		if err := os.Lchown(dst, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("unpack %s: %w", name, err)
		}
		if err := os.Chmod(dst, mode.Perm()|mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return fmt.Errorf("unpack %s: %w", name, err)
		}
		if hdr.Typeflag != tar.TypeDir {
			if err := os.Chtimes(dst, hdr.ModTime, hdr.ModTime); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t); err != nil {
			return fmt.Errorf("unpack %s: %w", dirs[i].path, err)
		}
	}
	return nil
}
