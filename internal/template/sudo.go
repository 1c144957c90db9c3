package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SudoPath is the sandbox's sudo: a link to envd, which acts as sudo when run under that name
// (see internal/envd/sudo). A set-user-ID sudo cannot work under gVisor, which ignores the
// set-user-ID bit, and envd's sudo behaves the same on every runtime.
const SudoPath = "/usr/bin/sudo"

// sudoDistrib is where Debian's own sudo binary goes, diverted so that package upgrades inside
// a sandbox update it there instead of replacing envd's sudo.
const sudoDistrib = "/usr/bin/sudo.distrib"

// installSudo points /usr/bin/sudo at envd. The link is relative and names envd's fixed path,
// so every later envd injection (a rename over /usr/bin/envd) updates sudo with it.
func installSudo(ctx context.Context, rootfs string) error {
	dst := filepath.Join(rootfs, SudoPath)
	if _, err := os.Lstat(dst); err == nil {
		// dpkg-divert --rename moves Debian's binary aside and records the diversion in the
		// rootfs's dpkg database, exactly as on a normal system.
		cmd := exec.CommandContext(ctx, "chroot", rootfs, "dpkg-divert", "--local", "--rename",
			"--divert", sudoDistrib, "--add", SudoPath)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("divert %s: %w: %s", SudoPath, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install sudo: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(SudoPath), EnvdPath)
	if err != nil {
		return fmt.Errorf("install sudo: %w", err)
	}
	if err := os.Symlink(rel, dst); err != nil {
		return fmt.Errorf("install sudo: %w", err)
	}
	return nil
}

// pipConf lets `pip install x` work as in E2B's base template. Debian marks its Python as
// externally managed (PEP 668), so pip refuses to install at all without this. With it, pip
// run by the user installs into ~/.local (the system site-packages are not writable, so pip
// falls back to a user install; ~/.profile puts ~/.local/bin on PATH), and pip under sudo
// installs into /usr/local/lib/python3*/dist-packages, never over the files of Debian's
// python3-* packages in /usr/lib/python3/dist-packages. A virtual environment is unaffected.
const pipConf = `# Hearth: let pip install packages outside a virtual environment, as in E2B's base template.
# As the user they go to ~/.local; as root to /usr/local, never over Debian's own packages.
[global]
break-system-packages = true
`

func configurePip(rootfs string) error {
	if err := os.WriteFile(filepath.Join(rootfs, "etc/pip.conf"), []byte(pipConf), 0o644); err != nil {
		return fmt.Errorf("pip.conf: %w", err)
	}
	return nil
}
