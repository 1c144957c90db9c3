package template

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Making an unpacked OCI image a Hearth template: what the base template's recipe does on
// Debian (recipe.go, sudo.go), done on whatever the image holds.
//
//   - envd at /usr/bin/envd (the agent's, copied from its base template unless told) and
//     /usr/bin/sudo pointing at it (the image's own sudo kept as /usr/bin/sudo.distrib);
//   - the account `user` (uid 1000 when free) with a home, bash as its shell, in group sudo
//     (envd's sudo policy) with a passwordless sudoers line for a real sudo;
//   - /etc/hosts, /etc/hostname, /etc/resolv.conf (Docker images carry none of them: the
//     engine mounts its own) and the mount points a sandbox needs.
//
// As in E2B, the image's Env becomes the template's environment; its WorkingDir, User,
// Entrypoint and Cmd are not used: a build from an image starts as root in no workdir, its
// user phase makes `user` the default, and a start command is the template's own.

// imageHosts is /etc/hosts of a template from an image without one.
const imageHosts = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
127.0.1.1	hearth
`

// imageProvision runs as root in the confined chroot (runScript) after the image is unpacked.
const imageProvision = `set -e
if ! grep -q '^sudo:' /etc/group 2>/dev/null; then groupadd --system sudo; fi
if id -u user >/dev/null 2>&1; then
  usermod -aG sudo user
elif grep -q '^[^:]*:[^:]*:1000:' /etc/passwd 2>/dev/null; then
  useradd --create-home --home-dir /home/user --user-group --groups sudo --shell /bin/bash user
else
  useradd --create-home --home-dir /home/user --uid 1000 --user-group --groups sudo --shell /bin/bash user
fi
passwd -d user >/dev/null 2>&1 || true
if [ -d /etc/sudoers.d ]; then
  printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/hearth-user
  chmod 0440 /etc/sudoers.d/hearth-user
fi`

// imageTools are what a template's build steps and sandboxes need from the image, with why.
var imageTools = []struct{ paths []string }{
	{[]string{"/bin/bash", "/usr/bin/bash"}},
	{[]string{"/usr/sbin/useradd", "/sbin/useradd", "/usr/bin/useradd"}},
	{[]string{"/usr/sbin/groupadd", "/sbin/groupadd", "/usr/bin/groupadd"}},
	{[]string{"/usr/sbin/usermod", "/sbin/usermod", "/usr/bin/usermod"}},
	{[]string{"/bin/grep", "/usr/bin/grep"}},
	{[]string{"/usr/bin/id", "/bin/id"}},
}

// imageBase pulls o.Image into rootfs and provisions it; it returns the build state the
// steps start from and the template's metadata so far.
func (o *APIBuildOptions) imageBase(ctx context.Context, rootfs string) (*buildState, Meta, error) {
	img := *o.Image
	o.Log(PhaseBase, "info", "[base] FROM "+img.Ref)
	logf := func(s string) { o.Log(PhaseBase, "info", s) }
	cfg, err := PullImage(ctx, img, rootfs, PullOptions{CacheDir: o.ImageCacheDir, CacheMaxBytes: o.ImageCacheMaxBytes, MaxBytes: o.ImageMaxBytes, Timeout: o.ImageTimeout, Log: logf})
	if err != nil {
		return nil, Meta{}, err
	}
	o.Log(PhaseBase, "info", "Pulled "+img.Ref+"@"+cfg.Digest)
	r, err := openInRoot(rootfs)
	if err != nil {
		return nil, Meta{}, err
	}
	defer r.Close()
	for _, t := range imageTools {
		found := false
		for _, p := range t.paths {
			if r.isFile(p) {
				found = true
				break
			}
		}
		if !found {
			return nil, Meta{}, fmt.Errorf("%w %s has no %s: a template's build steps and sandbox commands need bash, coreutils and the shadow tools (useradd), as E2B's do; images without them (distroless, scratch, busybox or Alpine without bash and shadow) cannot be a base: start from one that has them (debian, ubuntu, python, node) or add them in the image", ErrImage, img.Ref, t.paths[0])
		}
	}
	envdSrc := o.EnvdPath
	if envdSrc == "" {
		base, err := Open(o.DataDir, "base")
		if err != nil {
			return nil, Meta{}, fmt.Errorf("an image base takes envd from this host's base template: %w", err)
		}
		envdSrc = filepath.Join(base.RootFS, EnvdPath)
	}
	sum, err := injectEnvd(rootfs, envdSrc)
	if err != nil {
		return nil, Meta{}, err
	}
	for _, d := range []struct {
		p    string
		perm uint32
	}{{"/proc", 0o555}, {"/sys", 0o555}, {"/dev", 0o755}, {"/run", 0o755}, {"/tmp", 0o1777}, {"/root", 0o700}, {"/home", 0o755}, {"/etc", 0o755}} {
		if err := r.mkdir(d.p, d.perm); err != nil {
			return nil, Meta{}, fmt.Errorf("provision %s: %w", d.p, err)
		}
	}
	if hosts, _ := r.readFile("/etc/hosts", 1<<20); !strings.Contains(hosts, "localhost") {
		if err := r.writeFile("/etc/hosts", strings.NewReader(hosts+imageHosts), 0o644); err != nil {
			return nil, Meta{}, err
		}
	}
	if err := r.writeFile("/etc/hostname", strings.NewReader("hearth\n"), 0o644); err != nil {
		return nil, Meta{}, err
	}
	// As in the base template: the host's resolver is often on its loopback, out of a
	// sandbox's reach.
	if err := r.writeFile("/etc/resolv.conf", strings.NewReader("nameserver 8.8.8.8\nnameserver 1.1.1.1\n"), 0o644); err != nil {
		return nil, Meta{}, err
	}
	st := &buildState{rootfs: rootfs, user: "root", env: map[string]string{}}
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			st.env[k] = v
		}
	}
	out := o.logTo(PhaseBase)
	if err := st.runScript(ctx, "root", "/", imageProvision, nil, out); err != nil {
		return nil, Meta{}, fmt.Errorf("create the user account in %s: %w", img.Ref, err)
	}
	if err := st.imageSudo(ctx, r, out); err != nil {
		return nil, Meta{}, err
	}
	// E2B's user phase: steps run as `user` unless they say otherwise.
	st.user = UserName
	m := Meta{Image: img.Ref, ImageDigest: cfg.Digest, EnvdSHA256: sum, EnvdAt: time.Now().UTC()}
	return st, m, nil
}

// imageSudo points /usr/bin/sudo at envd, keeping an image's own sudo as sudo.distrib (with
// a dpkg diversion where the image has dpkg, so its package upgrades go there too).
func (st *buildState) imageSudo(ctx context.Context, r *inRootFS, out interface{ Write([]byte) (int, error) }) error {
	rel, err := filepath.Rel(filepath.Dir(SudoPath), EnvdPath)
	if err != nil {
		return err
	}
	if r.readlink(SudoPath) == rel {
		return nil // already envd's (an image made from a Hearth template)
	}
	if r.isFile(SudoPath) {
		if r.isFile("/usr/bin/dpkg-divert") {
			script := `dpkg-divert --local --rename --divert ` + sudoDistrib + ` --add ` + SudoPath
			if err := st.runScript(ctx, "root", "/", script, nil, out); err != nil {
				return fmt.Errorf("divert the image's sudo: %w", err)
			}
		} else if err := r.rename(filepath.Dir(SudoPath), filepath.Base(SudoPath), filepath.Base(sudoDistrib)); err != nil {
			return fmt.Errorf("move the image's sudo aside: %w", err)
		}
	}
	if err := r.symlink(rel, SudoPath); err != nil {
		return fmt.Errorf("install sudo: %w", err)
	}
	return nil
}
