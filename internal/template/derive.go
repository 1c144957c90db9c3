package template

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/hearthsh/hearth/internal/filelock"
)

// DeriveOptions configure Derive.
type DeriveOptions struct {
	// DataDir holds the templates under DataDir/templates.
	DataDir string
	// Name is the new template; From the built template it starts from.
	Name, From string
	// Run are shell commands (/bin/sh -c) run in order, as root, in the new root filesystem,
	// for example "apt-get update && apt-get install -y nodejs".
	Run []string
	// Progress receives the commands' output; nil discards it.
	Progress io.Writer
	Logger   *slog.Logger
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// NameForm describes a valid template name, for error messages.
const NameForm = "lower-case letters, digits and dashes, starting with a letter or digit, at most 63 characters"

// ErrInvalidName is wrapped by CheckName's errors.
var ErrInvalidName = errors.New("invalid template name")

// CheckName accepts only names of NameForm: a name becomes a directory under the data dir,
// so nothing like "../x" may reach a path join.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: want %s", ErrInvalidName, name, NameForm)
	}
	return nil
}

// Derive builds template o.Name as a copy of o.From with o.Run applied: the way to give
// sandboxes extra packages or files without a new recipe. The commands run on the host as
// root in a chroot of the copy, with the host's network and name servers, in a private mount
// namespace (proc, dev and the resolver configuration are mounted only there), so they are
// the operator's commands, not a sandbox's: they are not isolated. The result is assembled in
// a temp directory and renamed into place, replacing an older template of that name only
// when every command succeeded. It keeps From's envd; Build refreshes it later.
func Derive(ctx context.Context, o DeriveOptions) (*Template, error) {
	if err := CheckName(o.Name); err != nil {
		return nil, fmt.Errorf("derive template: %w", err)
	}
	if _, ok := recipes[o.Name]; ok || o.Name == o.From {
		return nil, fmt.Errorf("derive template %q: that name is taken by a template Hearth builds itself", o.Name)
	}
	if len(o.Run) == 0 {
		return nil, fmt.Errorf("derive template %s: no commands to run", o.Name)
	}
	from, err := Open(o.DataDir, o.From)
	if err != nil {
		return nil, fmt.Errorf("derive template %s from %s (build that first): %w", o.Name, o.From, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("template", o.Name, "from", o.From)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	root := filepath.Join(o.DataDir, "templates")
	unlock, err := filelock.Lock(ctx, filepath.Join(root, "."+o.Name+".lock"))
	if err != nil {
		return nil, fmt.Errorf("derive template %s: %w", o.Name, err)
	}
	defer unlock()
	removeStale(root, o.Name, log)
	return assemble(o.DataDir, o.Name, log, func(rootfs string) (Meta, error) {
		// -a keeps owners, modes, links and hard links; reflinks make it nearly free where the
		// filesystem has them.
		if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", from.RootFS, rootfs).CombinedOutput(); err != nil {
			return Meta{}, fmt.Errorf("copy %s: %w: %s", from.RootFS, err, out)
		}
		for i, c := range o.Run {
			log.Info("run", "step", i+1, "of", len(o.Run), "command", c)
			fmt.Fprintf(o.Progress, "# %s\n", c)
			if err := runInRoot(ctx, rootfs, c, o.Progress); err != nil {
				return Meta{}, fmt.Errorf("step %d (%s): %w", i+1, c, err)
			}
		}
		if err := dropAptCaches(rootfs); err != nil {
			return Meta{}, err
		}
		// The base's envd comes with the copy.
		m := from.Meta
		m.From, m.Run = o.From, o.Run
		return m, nil
	})
}

// swapIn replaces dir with the finished build in tmp. An old build is moved aside first:
// rename cannot replace a non-empty directory.
func swapIn(root, tmp, dir, name string) error {
	old := filepath.Join(root, "."+name+".old-"+randHex(4))
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	_ = os.RemoveAll(old)
	return nil
}

// inRootScript mounts what package managers expect and runs $CMD in the chroot $R. It runs
// in a private mount namespace of its own, so the mounts vanish with it, however it ends.
const inRootScript = `set -e
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
if [ -f "$R/etc/resolv.conf" ]; then mount --bind /etc/resolv.conf "$R/etc/resolv.conf"; fi
exec chroot "$R" /bin/sh -c "$CMD"`

// runInRoot runs command as root in the root filesystem at rootfs. Cancelling ctx kills its
// whole process group.
func runInRoot(ctx context.Context, rootfs, command string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--fork", "/bin/sh", "-c", inRootScript)
	cmd.Env = []string{
		"R=" + rootfs, "CMD=" + command,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
	}
	cmd.Stdout, cmd.Stderr = out, out
	killGroupOnCancel(cmd)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}
