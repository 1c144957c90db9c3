package microvm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/filelock"
)

// DefaultKernelPackage is the Debian meta-package whose dependency names the cloud kernel
// to fetch. The cloud flavour boots in ~4.5 s under TCG; a minimal kernel built from source
// boots in ~2.3 s but takes ~9 minutes to build on two cores, too slow for fresh CI machines.
const DefaultKernelPackage = "linux-image-cloud-amd64"

// Kernel is a guest kernel with its initramfs, ready to boot.
type Kernel struct {
	// Kernel is the bzImage; Initrd the uncompressed newc initramfs with the guest init.
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	// Package and Release name what was fetched, e.g. linux-image-6.1.0-56-cloud-amd64 and
	// 6.1.0-56-cloud-amd64.
	Package string `json:"package"`
	Release string `json:"release"`
	// Modules lists the modules the initramfs loads, in order.
	Modules []string `json:"modules"`
}

// KernelOptions configures EnsureKernel.
type KernelOptions struct {
	// Dir caches kernels, one subdirectory per package and init version: <data>/vm/kernel.
	Dir string
	// Package is the exact kernel package; empty resolves DefaultKernelPackage's dependency
	// with apt-cache, falling back to the newest kernel already cached.
	Package string
	// Busybox is a statically linked busybox (Debian's busybox-static); default /bin/busybox.
	Busybox string
	Log     *slog.Logger
}

const kernelMeta = "kernel.json"

// EnsureKernel returns the cached kernel and initramfs, fetching and building them first if
// needed (a few seconds: one ~27 MB download). Builds happen in a temp dir renamed into place
// under a lock, so concurrent callers and crashed builds never see a partial kernel.
func EnsureKernel(ctx context.Context, o KernelOptions) (Kernel, error) {
	if o.Dir == "" {
		return Kernel{}, errors.New("microvm: KernelOptions.Dir is required")
	}
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	pkg := o.Package
	if pkg == "" {
		var err error
		if pkg, err = resolveKernelPackage(ctx); err != nil {
			if k, ok := newestCachedKernel(o.Dir); ok {
				o.Log.Warn("cannot resolve the kernel package; using the cached kernel", "err", err, "package", k.Package)
				return k, nil
			}
			return Kernel{}, err
		}
	}
	final := filepath.Join(o.Dir, pkg+"-"+initVersion())
	if k, err := readKernel(final); err == nil {
		return k, nil
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(o.Dir, ".lock"))
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()
	if k, err := readKernel(final); err == nil { // built by someone else meanwhile
		return k, nil
	}
	start := time.Now()
	tmp, err := os.MkdirTemp(o.Dir, ".build-")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	k, err := buildKernel(ctx, tmp, pkg, o.Busybox)
	if err != nil {
		return Kernel{}, fmt.Errorf("guest kernel %s: %w", pkg, err)
	}
	_ = os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	o.Log.Info("guest kernel ready", "package", pkg, "modules", len(k.Modules), "took", time.Since(start).Round(time.Millisecond))
	return readKernel(final)
}

// initVersion changes whenever what goes into the initramfs besides the kernel changes, so a
// new init script never boots from a stale cached initramfs.
func initVersion() string {
	h := sha256.Sum256([]byte(initScript + strings.Join(guestModules, ",")))
	return hex.EncodeToString(h[:4])
}

var dependsRE = regexp.MustCompile(`Depends:\s*(linux-image-\S+)`)

// resolveKernelPackage asks apt which versioned kernel DefaultKernelPackage points at.
func resolveKernelPackage(ctx context.Context) (string, error) {
	out, err := run(ctx, "", "apt-cache", "depends", DefaultKernelPackage)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", DefaultKernelPackage, err)
	}
	m := dependsRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("resolve %s: no linux-image dependency in %q", DefaultKernelPackage, out)
	}
	return m[1], nil
}

// newestCachedKernel returns the lexically last complete cached kernel, for hosts where apt
// is unavailable after the first fetch.
func newestCachedKernel(dir string) (Kernel, bool) {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "linux-image-") && strings.HasSuffix(e.Name(), "-"+initVersion()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for i := len(names) - 1; i >= 0; i-- {
		if k, err := readKernel(filepath.Join(dir, names[i])); err == nil {
			return k, true
		}
	}
	return Kernel{}, false
}

func readKernel(dir string) (Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, kernelMeta))
	if err != nil {
		return Kernel{}, err
	}
	var k Kernel
	if err := json.Unmarshal(b, &k); err != nil {
		return Kernel{}, fmt.Errorf("%s: %w", dir, err)
	}
	k.Kernel = filepath.Join(dir, k.Kernel)
	k.Initrd = filepath.Join(dir, k.Initrd)
	for _, p := range []string{k.Kernel, k.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, err
		}
	}
	return k, nil
}

// buildKernel downloads pkg into dir, extracts the kernel and the guest modules, and writes
// the initramfs and kernel.json there (paths in kernel.json are relative to dir).
func buildKernel(ctx context.Context, dir, pkg, busybox string) (Kernel, error) {
	if err := checkStatic(busybox); err != nil {
		return Kernel{}, err
	}
	dl := filepath.Join(dir, "download")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return Kernel{}, err
	}
	// apt drops privileges to _apt for downloads into a directory it can write.
	_ = os.Chmod(dl, 0o777)
	if _, err := run(ctx, dl, "apt-get", "download", "-q", pkg); err != nil {
		return Kernel{}, err
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return Kernel{}, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	x := filepath.Join(dl, "x")
	if _, err := run(ctx, "", "dpkg-deb", "-x", debs[0], x); err != nil {
		return Kernel{}, err
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return Kernel{}, fmt.Errorf("%s: expected one boot/vmlinuz-*, found %d", pkg, len(vmlinuz))
	}
	release := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	k := Kernel{Kernel: "vmlinuz", Initrd: "initrd.cpio", Package: pkg, Release: release}
	if err := os.Rename(vmlinuz[0], filepath.Join(dir, k.Kernel)); err != nil {
		return Kernel{}, err
	}
	var mods []string
	for _, root := range []string{filepath.Join(x, "lib", "modules", release), filepath.Join(x, "usr", "lib", "modules", release)} {
		if _, err := os.Stat(root); err != nil {
			continue
		}
		idx, err := indexModules(root)
		if err != nil {
			return Kernel{}, err
		}
		if mods, err = moduleOrder(idx, guestModules); err != nil {
			return Kernel{}, err
		}
		break
	}
	if err := writeInitramfs(filepath.Join(dir, k.Initrd), busybox, mods); err != nil {
		return Kernel{}, err
	}
	for _, m := range mods {
		k.Modules = append(k.Modules, moduleName(m))
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, kernelMeta), b, 0o644); err != nil {
		return Kernel{}, err
	}
	return k, os.RemoveAll(dl)
}

// writeInitramfs packs busybox, the modules (in load order) and /init. It stays
// uncompressed: decompressing under TCG costs more than reading the extra megabytes.
func writeInitramfs(path, busybox string, mods []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c := newCPIOWriter(f)
	for _, d := range []string{"bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"} {
		c.Dir(d)
	}
	// The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.FileFrom("bin/busybox", 0o755, busybox)
	var order []string
	for _, m := range mods {
		name := filepath.Base(m)
		c.FileFrom("lib/modules/"+name, 0o644, m)
		order = append(order, name)
	}
	c.File("lib/modules/order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	c.File("init", 0o755, []byte(initScript))
	if err := c.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return f.Close()
}

// checkStatic fails unless path is a statically linked executable: the initramfs has no
// dynamic loader.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox for the guest initramfs: %w (install busybox-static)", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: install busybox-static", path)
		}
	}
	return nil
}

// run runs a short command in dir and returns its stdout; errors carry stderr.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, clip(strings.TrimSpace(stderr.String())))
	}
	return stdout.String(), nil
}

// clip bounds one part of an error message.
func clip(s string) string {
	const max = 1500
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}
