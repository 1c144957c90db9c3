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
	"strconv"
	"strings"
	"syscall"
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
// under dir: one directory per template, so that DropImages can take all of a deleted
// template version's images (one per disk size) without parsing file names.
func ImagePath(dir string, t runtime.Template, freeMiB int) string {
	name := t.Version
	if freeMiB > 0 {
		name += fmt.Sprintf("-free%dm", freeMiB)
	}
	return filepath.Join(dir, unsafeName.ReplaceAllString(t.Name, "_"), unsafeName.ReplaceAllString(name, "_")+".ext4")
}

// DropImages deletes every image EnsureImage keeps under dir for template name, each under
// its lock, so none that a create is writing is taken from under it. The agent calls it
// (through the drivers' runtime.TemplateDropper) once no sandbox or snapshot uses name.
// Images of the layout before one directory per template (<name>-<version>.ext4 in dir) are
// not recognised and stay.
func DropImages(ctx context.Context, dir, name string) error {
	if name == "" || name != filepath.Base(name) || !filepath.IsLocal(name) {
		return fmt.Errorf("drop images: invalid template name %q", name)
	}
	tdir := filepath.Join(dir, unsafeName.ReplaceAllString(name, "_"))
	entries, err := os.ReadDir(tdir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drop images of %s: %w", name, err)
	}
	for _, e := range entries {
		img, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok {
			img, _ = strings.CutSuffix(e.Name(), ".tmp")
		}
		if !strings.HasSuffix(img, ".ext4") {
			continue
		}
		final := filepath.Join(tdir, img)
		lock, err := filelock.Acquire(ctx, final+".lock")
		if err != nil {
			return fmt.Errorf("drop images of %s: %w", name, err)
		}
		for _, p := range []string{final, final + ".tmp"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				lock.Unlock()
				return fmt.Errorf("drop images of %s: %w", name, err)
			}
		}
		if err := lock.UnlockAndRemove(); err != nil {
			return fmt.Errorf("drop images of %s: %w", name, err)
		}
	}
	// A create that began meanwhile may have made the directory's next image: then it stays.
	if err := os.Remove(tdir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("drop images of %s: %w", name, err)
	}
	return nil
}

// imageSlackMiB is the first guess of what ext4's inode tables, bitmaps and journal take.
const imageSlackMiB = 32

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
	lock, err := lockImage(ctx, final)
	if err != nil {
		return "", err
	}
	// The lock matters only while the image is built: once it is in place, the Stat above
	// answers, so the lock file goes with the lock (filelock.Acquire re-locks a removed file).
	defer lock.UnlockAndRemove()
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	start := time.Now()
	used, entries, err := treeBytes(t.RootFS)
	if err != nil {
		return "", fmt.Errorf("image of %s: %w", t.RootFS, err)
	}
	sizeMiB := max(int64(o.MinSizeMiB), 2*used>>20+1024)
	if o.FreeMiB > 0 {
		// Each entry's inode on top of ext4's default table (see mkfs) takes 256 bytes.
		sizeMiB = used>>20 + int64(o.FreeMiB) + imageSlackMiB + entries*256>>20
	}
	tmp := final + ".tmp"
	free, err := mkfs(ctx, t, tmp, sizeMiB, entries)
	// ext4's own metadata and the content's block rounding take what is hard to predict:
	// measure the free space and build again once, corrected, if it is off by more than 1/32.
	if want := int64(o.FreeMiB); err == nil && want > 0 && abs(free-want) > max(4, want/32) {
		sizeMiB += want - free
		free, err = mkfs(ctx, t, tmp, sizeMiB, entries)
	}
	if err != nil {
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
		"size_mib", sizeMiB, "free_mib", free, "allocated_mib", alloc>>20, "took", time.Since(start).Round(time.Millisecond))
	return final, nil
}

// lockImage takes the build lock of image path final, making its template's directory; a
// DropImages that removes the directory meanwhile makes it try again.
func lockImage(ctx context.Context, final string) (*filelock.Held, error) {
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
			return nil, fmt.Errorf("image cache: %w", err)
		}
		lock, err := filelock.Acquire(ctx, final+".lock")
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 2 {
			return lock, err
		}
	}
}

// mkfs writes an ext4 image of sizeMiB with t's content to path and returns its free MiB.
//
// ext4 sizes its inode table by the disk size (one inode per 16 KiB), which a template of many
// small files (npm's modules) outgrows in an image sized to the content plus a little free
// space: it gets an inode for each of its entries on top of that default.
func mkfs(ctx context.Context, t runtime.Template, path string, sizeMiB, entries int64) (int64, error) {
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	err = f.Truncate(sizeMiB << 20)
	f.Close()
	if err != nil {
		return 0, err
	}
	// Inode tables and the journal are zeroed now (sparse writes on a file) rather than by
	// the guest's lazy-init thread, which would fill every sandbox's overlay with zeros.
	inodes := entries + sizeMiB<<20/16384
	if _, err := run(ctx, "", "mkfs.ext4", "-q", "-F", "-L", "hearth-root", "-m", "0", "-N", strconv.FormatInt(inodes, 10),
		"-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", t.RootFS, path); err != nil {
		return 0, err
	}
	out, err := run(ctx, "", "dumpe2fs", "-h", path)
	if err != nil {
		return 0, err
	}
	return ext4FreeMiB(out)
}

// ext4FreeMiB reads the free space from `dumpe2fs -h` output.
func ext4FreeMiB(out string) (int64, error) {
	var blocks, size int64
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "Free blocks":
			blocks = n
		case "Block size":
			size = n
		default:
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("dumpe2fs: %q: %w", line, err)
		}
	}
	if size == 0 {
		return 0, errors.New("dumpe2fs: no block size in its output")
	}
	return blocks * size >> 20, nil
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// treeBytes estimates what the tree under root takes on ext4, every regular file and
// directory rounded up to whole 4 KiB blocks (a template of many small files wastes much of
// its blocks), and counts its entries.
func treeBytes(root string) (size, entries int64, err error) {
	var n int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entries++
		switch {
		case d.IsDir():
			n += 4096
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	return n, entries, err
}
