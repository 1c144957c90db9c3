package microvm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/hearthsh/hearth/internal/filelock"

	"github.com/hearthsh/hearth/internal/runtime"
)

// DefaultImageMiB is the smallest size of a root filesystem image. The image file is sparse,
// so unused space costs nothing on the host; inside a sandbox it is the disk space available
// for writes.
const DefaultImageMiB = 4096

// ImageOptions configures EnsureImage.
type ImageOptions struct {
	// Dir caches images, one per template version: <data>/vm/images.
	Dir string
	// MinSizeMiB is the smallest image size; default DefaultImageMiB. Larger templates get
	// their content size plus the same again (at least 1 GiB) free.
	MinSizeMiB int
	// FreeMiB, when set, sizes the image instead: the template's content plus FreeMiB free,
	// so a sandbox's writes fail with ENOSPC after about FreeMiB (runtime.Spec.DiskMiB).
	// Images of one template version are kept per FreeMiB.
	FreeMiB int
	Log     *slog.Logger
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// ImagePath is where EnsureImage keeps t's image with freeMiB free (0: the default size)
// under dir.
func ImagePath(dir string, t runtime.Template, freeMiB int) string {
	name := t.Name + "-" + t.Version
	if freeMiB > 0 {
		name += fmt.Sprintf("-free%dm", freeMiB)
	}
	return filepath.Join(dir, unsafeName.ReplaceAllString(name, "_")+".ext4")
}

// ext4 keeps inode tables, bitmaps and the journal in the image, and files take whole blocks:
// imageSlackMiB and a 1/8 margin on the content keep the free space at about FreeMiB.
const imageSlackMiB = 64

// EnsureImage returns the read-only ext4 image of template t, building it once per template
// version with mkfs.ext4 -d (which keeps owners, modes, hard links and device nodes). The
// image is written to a temp file and renamed into place under a lock.
func EnsureImage(ctx context.Context, o ImageOptions, t runtime.Template) (string, error) {
	if o.Dir == "" || t.RootFS == "" || t.Version == "" {
		return "", errors.New("microvm: EnsureImage needs a cache dir and a template with RootFS and Version")
	}
	if o.MinSizeMiB == 0 {
		o.MinSizeMiB = DefaultImageMiB
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	final := ImagePath(o.Dir, t, o.FreeMiB)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	unlock, err := filelock.Lock(ctx, final+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	start := time.Now()
	used, err := treeBytes(t.RootFS)
	if err != nil {
		return "", fmt.Errorf("image of %s: %w", t.RootFS, err)
	}
	sizeMiB := max(int64(o.MinSizeMiB), 2*used>>20+1024)
	if o.FreeMiB > 0 {
		sizeMiB = used>>20 + used>>23 + int64(o.FreeMiB) + imageSlackMiB
	}
	tmp := final + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	err = f.Truncate(sizeMiB << 20)
	f.Close()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("image: %w", err)
	}
	// Inode tables and the journal are zeroed now (sparse writes on a file) rather than by
	// the guest's lazy-init thread, which would fill every sandbox's overlay with zeros.
	if _, err := run(ctx, "", "mkfs.ext4", "-q", "-F", "-L", "hearth-root", "-m", "0",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", t.RootFS, tmp); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("image of template %s: %w", t.Name, err)
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("image: %w", err)
	}
	alloc, _ := AllocatedBytes(final)
	o.Log.Info("root filesystem image built", "template", t.Name, "version", t.Version,
		"size_mib", sizeMiB, "allocated_mib", alloc>>20, "took", time.Since(start).Round(time.Millisecond))
	return final, nil
}

// treeBytes sums the sizes of the regular files under root.
func treeBytes(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
