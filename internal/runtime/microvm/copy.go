package microvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// CloneFile creates dst as a copy of src that shares blocks where the filesystem can
// (FICLONE on btrfs and xfs), else copies only src's data extents (SEEK_DATA/SEEK_HOLE with
// copy_file_range) so holes stay holes: a 512 MiB memory file with 80 MiB in use costs
// 80 MiB to copy and to store. dst must not exist; on error it is removed. ctx is checked
// between extents.
func CloneFile(ctx context.Context, src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("clone %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	if err := copyExtents(ctx, in, out, fi.Size()); err != nil {
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return nil
}

// copyExtents copies the data extents of in to the same offsets of out and sets out's size.
func copyExtents(ctx context.Context, in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for data < hole {
			ro, wo := data, data
			n, err := unix.CopyFileRange(int(in.Fd()), &ro, int(out.Fd()), &wo, int(min(hole-data, 64<<20)), 0)
			if err != nil {
				if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
					return copyRange(in, out, data, hole-data)
				}
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

// copyRange is the plain read/write fallback for filesystems without copy_file_range.
func copyRange(in, out *os.File, off, n int64) error {
	_, err := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, n))
	return err
}

// AllocatedBytes returns the bytes of disk a file really occupies (st_blocks), which for the
// sparse memory and disk files of a snapshot is what it costs, unlike its apparent size.
func AllocatedBytes(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
