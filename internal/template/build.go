package template

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/filelock"
)

// BuildOptions configure Build.
type BuildOptions struct {
	// DataDir holds the template cache under DataDir/templates.
	DataDir string
	// Name is the template to build; see Names.
	Name string
	// EnvdPath is the envd binary to inject at /usr/bin/envd. Required.
	EnvdPath string
	// Mirror is the Debian mirror; empty means the machine's own (MachineMirror("/etc/apt")).
	Mirror string
	// Rebuild forces a fresh debootstrap even when a cached rootfs exists.
	Rebuild bool
	// DiskMiB, when above 0, sets the template's disk size (Meta.DiskMiB).
	DiskMiB int
	// Progress receives debootstrap's output; nil discards it.
	Progress io.Writer
	// Logger receives one line per step; nil means slog.Default().
	Logger *slog.Logger
}

// Build returns template o.Name with o.EnvdPath injected, running debootstrap only when the
// template is not cached yet (or o.Rebuild). A fresh rootfs is assembled in a temp directory
// next to the cache and renamed into place, so a crash or cancellation never leaves a
// half-built template that later looks valid. Concurrent builds of one template serialise on
// a lock file.
func Build(ctx context.Context, o BuildOptions) (*Template, error) {
	if err := CheckName(o.Name); err != nil {
		return nil, fmt.Errorf("build template: %w", err)
	}
	rc, ok := recipes[o.Name]
	if !ok {
		// A derived template (Derive) is rebuilt by deriving it again; Build only keeps its
		// envd current.
		if t, err := Open(o.DataDir, o.Name); err != nil || !t.Meta.Derived() || o.Rebuild {
			return nil, fmt.Errorf("build template %q: unknown template (known: %v, or one derived from them with --from)", o.Name, Names())
		}
	}
	if o.EnvdPath == "" {
		return nil, fmt.Errorf("build template %s: no envd binary given", o.Name)
	}
	if _, err := os.Stat(o.EnvdPath); err != nil {
		return nil, fmt.Errorf("build template %s: envd: %w", o.Name, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("template", o.Name)
	root := filepath.Join(o.DataDir, "templates")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("build template %s: %w", o.Name, err)
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(root, "."+o.Name+".lock"))
	if err != nil {
		return nil, fmt.Errorf("build template %s: %w", o.Name, err)
	}
	defer unlock()
	removeStale(root, o.Name, log)

	t, err := Open(o.DataDir, o.Name)
	stale := err == nil && ok && !t.Meta.Derived() && t.Meta.Recipe != rc.fingerprint()
	if stale {
		log.Info("recipe changed since the cached rootfs was built: rebuilding", "built_from", t.Meta.Recipe, "recipe", rc.fingerprint())
	}
	switch {
	case err == nil && !stale && (!o.Rebuild || t.Meta.Derived()):
		log.Info("using cached rootfs", "dir", t.RootFS, "built_at", t.Meta.BuiltAt)
	case !ok:
		return nil, fmt.Errorf("build template %s: derived template gone while building: %w", o.Name, err)
	case err == nil || errors.Is(err, ErrNotBuilt):
		if t, err = bootstrap(ctx, o, rc, root, log); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("build template %s: cached copy unusable (use a rebuild): %w", o.Name, err)
	}

	if o.DiskMiB > 0 && o.DiskMiB != t.Meta.DiskMiB {
		t.Meta.DiskMiB = o.DiskMiB
		if err := writeMeta(t.Dir, t.Meta); err != nil {
			return nil, fmt.Errorf("build template %s: %w", o.Name, err)
		}
	}
	sum, err := fileSHA256(o.EnvdPath)
	if err != nil {
		return nil, fmt.Errorf("build template %s: hash envd: %w", o.Name, err)
	}
	cur, _ := fileSHA256(filepath.Join(t.RootFS, EnvdPath))
	if sum == t.Meta.EnvdSHA256 && cur == sum {
		log.Info("envd up to date", "sha256", sum[:12])
		return t, nil
	}
	start := time.Now()
	if sum, err = injectEnvd(t.RootFS, o.EnvdPath); err != nil {
		return nil, fmt.Errorf("build template %s: %w", o.Name, err)
	}
	t.Meta.EnvdSHA256, t.Meta.EnvdAt = sum, time.Now().UTC()
	if err := writeMeta(t.Dir, t.Meta); err != nil {
		return nil, fmt.Errorf("build template %s: %w", o.Name, err)
	}
	log.Info("injected envd", "sha256", sum[:12], "took", time.Since(start).Round(time.Millisecond))
	return t, nil
}

// bootstrap runs debootstrap and the recipe's configuration into a new root filesystem.
func bootstrap(ctx context.Context, o BuildOptions, rc recipe, root string, log *slog.Logger) (*Template, error) {
	mirror := o.Mirror
	if mirror == "" {
		mirror = MachineMirror("/etc/apt", rc.suite)
	}
	return assemble(o.DataDir, o.Name, log, func(rootfs string) (Meta, error) {
		log.Info("debootstrap", "suite", rc.suite, "mirror", mirror, "dir", rootfs)
		if err := debootstrap(ctx, rc, rootfs, mirror, o.Progress); err != nil {
			return Meta{}, err
		}
		if err := slim(rootfs); err != nil {
			return Meta{}, err
		}
		if err := aptInstall(ctx, rootfs, rc.aptPackages, o.Progress); err != nil {
			return Meta{}, err
		}
		if err := rc.configure(ctx, rootfs); err != nil {
			return Meta{}, fmt.Errorf("configure: %w", err)
		}
		return Meta{Suite: rc.suite, Mirror: mirror, Recipe: rc.fingerprint()}, nil
	})
}

// assemble makes template name's root filesystem with fill in a temp directory next to the
// cache, records fill's Meta (with name, a new build ID, the time, duration and size added)
// and swaps the result in, so a crash or a failure never leaves a half-built template that
// later looks valid. The caller holds the template's lock.
func assemble(dataDir, name string, log *slog.Logger, fill func(rootfs string) (Meta, error)) (*Template, error) {
	root := filepath.Join(dataDir, "templates")
	tmp := filepath.Join(root, "."+name+".tmp-"+randHex(4))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	rootfs := filepath.Join(tmp, rootfsName)
	start := time.Now()
	m, err := fill(rootfs)
	if err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	took := time.Since(start)
	if m.SizeBytes, err = diskUsage(rootfs); err != nil {
		return nil, fmt.Errorf("build template %s: size: %w", name, err)
	}
	m.Name, m.BuildID, m.BuiltAt, m.BuildSeconds = name, randHex(8), time.Now().UTC(), took.Seconds()
	if err := writeMeta(tmp, m); err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	if err := swapIn(root, tmp, Dir(dataDir, name), name); err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	ok = true
	log.Info("rootfs built", "took", took.Round(time.Millisecond), "size_mib", m.SizeBytes>>20)
	return Open(dataDir, name)
}

// killGroupOnCancel makes cmd run in a process group of its own that cancelling its context
// kills whole (dpkg, maintainer scripts and whatever else it started).
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
}

// debootstrap runs debootstrap into rootfs. Cancelling ctx kills its whole process group,
// dpkg and maintainer scripts included.
func debootstrap(ctx context.Context, rc recipe, rootfs, mirror string, progress io.Writer) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap not installed (apt-get install debootstrap): %w", err)
	}
	if progress == nil {
		progress = io.Discard
	}
	args := []string{"--variant=" + rc.variant}
	if len(rc.packages) > 0 {
		args = append(args, "--include="+strings.Join(rc.packages, ","))
	}
	args = append(args, rc.suite, rootfs, mirror)
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Stdout, cmd.Stderr = progress, progress
	killGroupOnCancel(cmd)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("debootstrap: %w", ctx.Err())
		}
		return fmt.Errorf("debootstrap %s from %s: %w (see %s/debootstrap/debootstrap.log)", rc.suite, mirror, err, rootfs)
	}
	return nil
}

// aptInstall installs packages inside rootfs with its own apt (its sources name the mirror
// debootstrap used), without recommended packages. The package lists it downloads are
// dropped later with the other apt caches.
func aptInstall(ctx context.Context, rootfs string, packages []string, progress io.Writer) error {
	if len(packages) == 0 {
		return nil
	}
	if progress == nil {
		progress = io.Discard
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	for _, args := range [][]string{
		{"apt-get", "update", "-q"},
		append([]string{"apt-get", "install", "-q", "-y", "--no-install-recommends"}, packages...),
	} {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{rootfs}, args...)...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = progress, progress
		killGroupOnCancel(cmd)
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", strings.Join(args, " "), ctx.Err())
			}
			return fmt.Errorf("%s in the rootfs: %w", strings.Join(args[:2], " "), err)
		}
	}
	return nil
}

// removeStale deletes temp and old directories left by builds that crashed. The caller holds
// the template's lock, so no live build owns them.
func removeStale(root, name string, log *slog.Logger) {
	for _, pat := range []string{"." + name + ".tmp-*", "." + name + ".old-*"} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		for _, p := range m {
			log.Info("removing leftover build dir", "dir", p)
			_ = os.RemoveAll(p)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
