package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime"
)

// image returns the ext4 image of s.Template, building it on first use of a template
// version: `mkfs.ext4 -d` populates a sparse file from the template dir in one pass, as
// root-owned files keep their owners, modes and xattrs. The image is never written after
// that; sandboxes boot from copies. Concurrent Creates of one template build it once.
func (d *Driver) image(ctx context.Context, s runtime.Spec) (string, error) {
	if s.Template.Version == "" {
		return "", fmt.Errorf("template %s has no version to key its image on", s.Template.Name)
	}
	dir := filepath.Join(d.cfg.ImageDir, s.Template.Name)
	img := filepath.Join(dir, s.Template.Version+".ext4")
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	unlock, err := flock(ctx, dir+".lock")
	if err != nil {
		return "", fmt.Errorf("image lock: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	start := time.Now()
	used, err := dirBytes(s.Template.RootFS)
	if err != nil {
		return "", fmt.Errorf("size template %s: %w", s.Template.Name, err)
	}
	// ext4 metadata (inode tables, journal) takes ~10% on small images.
	size := used + used/8 + int64(d.cfg.DiskFreeMiB)<<20 + 64<<20
	tmp := img + ".tmp"
	if err := buildExt4(ctx, s.Template.RootFS, tmp, size); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("build image of template %s: %w", s.Template.Name, err)
	}
	if err := os.Rename(tmp, img); err != nil {
		return "", err
	}
	// Images of older versions of this template are never booted again.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.Name() != filepath.Base(img) {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	d.log.Info("rootfs image built", "template", s.Template.Name, "version", s.Template.Version,
		"size_mib", size>>20, "took", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// buildExt4 makes a sparse ext4 image of size bytes at out holding the tree at src.
func buildExt4(ctx context.Context, src, out string, size int64) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-F", "-q", "-L", "rootfs", "-d", src, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, b)
	}
	return nil
}

// dirBytes sums the apparent sizes of the files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// cowCopy makes dst a private writable copy of src as cheaply as the filesystem allows: a
// reflink (FICLONE: instant, shares blocks until written, on XFS, Btrfs, bcachefs) or else
// a sparse copy that copies only src's data extents (SEEK_DATA/SEEK_HOLE) with
// copy_file_range, so an image that is mostly free space costs only its used blocks.
func cowCopy(src, dst string) (reflinked bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return false, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return true, nil
	}
	if err := out.Truncate(fi.Size()); err != nil {
		return false, err
	}
	return false, sparseCopy(in, out, fi.Size())
}

// sparseCopy copies the data extents of in to the same offsets of out.
func sparseCopy(in, out *os.File, size int64) error {
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for data < hole {
			roff, woff := data, data
			n, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(hole-data), 0)
			if err != nil {
				return fmt.Errorf("copy_file_range: %w", err)
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
			data += int64(n)
		}
		off = hole
	}
	return nil
}

// flock takes an exclusive lock on path, polling so ctx can cancel the wait.
func flock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
