package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// recipe says how to build one named template's root filesystem.
type recipe struct {
	suite    string
	variant  string
	packages []string
	// aptPackages are installed after debootstrap with apt-get inside the rootfs, without
	// recommended packages: debootstrap's own dependency resolver is simplistic and fails on
	// packages such as npm, whose dependencies apt resolves fine.
	aptPackages []string
	// configure runs after debootstrap on the finished rootfs directory.
	configure func(ctx context.Context, rootfs string) error
	// revision changes whenever configure does what it did not before: with the suite,
	// variant and packages it makes the recipe's fingerprint, and a cached rootfs built
	// from another fingerprint is rebuilt (see Build).
	revision int
}

// fingerprint identifies what the recipe builds. It is recorded in Meta.Recipe.
func (r recipe) fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "suite=%s\nvariant=%s\nrevision=%d\n", r.suite, r.variant, r.revision)
	for _, p := range r.packages {
		fmt.Fprintf(h, "package=%s\n", p)
	}
	for _, p := range r.aptPackages {
		fmt.Fprintf(h, "apt=%s\n", p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// recipes are the templates Hearth knows how to build.
var recipes = map[string]recipe{
	// base mirrors E2B's base template: Debian with the everyday tools, Python with pip and
	// venv, Node.js with npm, and an unprivileged default user `user` with passwordless sudo
	// that commands run as unless told otherwise. debootstrap installs only what packages
	// depend on, never what they recommend, which keeps the image lean.
	"base": {
		suite:   "bookworm",
		variant: "minbase",
		packages: []string{
			"bash", "coreutils", "python3", "python-is-python3", "curl", "git",
			"ca-certificates", "procps", "sudo",
		},
		aptPackages: []string{"python3-pip", "python3-venv", "nodejs", "npm"},
		configure:   configureBase,
		revision:    6, // 2: envd's sudo, user in group sudo, pip.conf; 3: no docs (slim); 4: no distutils .pth; 5: /etc/profile without id -u; 6: root's ~/.profile runs mesg only on a terminal
	},
}

// Names returns the names of the templates that can be built.
func Names() []string {
	var n []string
	for k := range recipes {
		n = append(n, k)
	}
	return n
}

// User is the default account of the base template, as in E2B's base template.
const (
	UserName = "user"
	UserUID  = 1000
	UserHome = "/home/user"
)

func configureBase(ctx context.Context, rootfs string) error {
	// useradd runs inside the rootfs so that /etc/passwd, shadow, group and the skeleton home
	// are made by Debian's own tools, exactly as on a normal install.
	// Membership of group sudo is what lets the user use envd's sudo (see installSudo).
	cmd := exec.CommandContext(ctx, "chroot", rootfs, "useradd",
		"--create-home", "--home-dir", UserHome, "--uid", fmt.Sprint(UserUID),
		"--user-group", "--groups", "sudo", "--shell", "/bin/bash", UserName)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("useradd %s: %w: %s", UserName, err, strings.TrimSpace(string(out)))
	}
	// Debian's sudo stays installed (as /usr/bin/sudo.distrib, see installSudo) with the same
	// policy, for VM sandboxes where set-user-ID works and someone calls it by that name.
	sudoers := fmt.Sprintf("%s ALL=(ALL:ALL) NOPASSWD: ALL\n", UserName)
	if err := os.WriteFile(filepath.Join(rootfs, "etc/sudoers.d/hearth-user"), []byte(sudoers), 0o440); err != nil {
		return fmt.Errorf("sudoers: %w", err)
	}
	if err := installSudo(ctx, rootfs); err != nil {
		return err
	}
	if err := configurePip(rootfs); err != nil {
		return err
	}
	if err := fastLoginProfile(rootfs); err != nil {
		return err
	}
	if err := quietRootProfile(rootfs); err != nil {
		return err
	}
	// The host's resolv.conf (which debootstrap copies in) often names a resolver on the
	// host's loopback, unreachable from a sandbox's own network stack.
	resolv := "nameserver 8.8.8.8\nnameserver 1.1.1.1\n"
	if err := os.WriteFile(filepath.Join(rootfs, "etc/resolv.conf"), []byte(resolv), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("hearth\n"), 0o644); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	return dropAptCaches(rootfs)
}

// fastLoginProfile makes /etc/profile read the uid from bash's EUID instead of running
// `id -u`. Every command the SDKs run is `bash -l -c CMD`, which reads /etc/profile, and the
// command substitution costs a fork and an exec: about 20 of the 36 ms that `bash -l -c true`
// takes under gVisor here (bench: exec). dash and other shells without EUID still run id.
func fastLoginProfile(rootfs string) error {
	p := filepath.Join(rootfs, "etc/profile")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	const slow, fast = `"$(id -u)"`, `"${EUID:-$(id -u)}"`
	if !strings.Contains(string(b), slow) {
		return nil // not Debian's profile: leave it as it is
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), slow, fast)), 0o644); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}

// quietRootProfile makes root's ~/.profile run `mesg n` only when stdin is a terminal.
// mesg acts on stdin's terminal and, without one, does nothing but fail (which the profile
// ignores), so the result is the same; but the fork and exec cost ~6.5 ms of every command
// run as root under gVisor here (bench: exec, "envd direct as root" against "envd direct").
func quietRootProfile(rootfs string) error {
	p := filepath.Join(rootfs, "root/.profile")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("root profile: %w", err)
	}
	const slow = "mesg n 2> /dev/null || true"
	const fast = "if [ -t 0 ]; then " + slow + "; fi"
	s := string(b)
	if !strings.Contains(s, slow) || strings.Contains(s, fast) {
		return nil // not Debian's profile, or already done: leave it as it is
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(s, slow, fast)), 0o644); err != nil {
		return fmt.Errorf("root profile: %w", err)
	}
	return nil
}

// dropAptCaches removes downloaded .debs and package lists: they are only needed to install,
// and dropping them keeps every template and every checkpoint smaller. `apt-get update`
// inside a sandbox refetches lists.
func dropAptCaches(rootfs string) error {
	r, err := openInRoot(rootfs)
	if err != nil {
		return fmt.Errorf("clean apt caches: %w", err)
	}
	defer r.Close()
	for _, c := range [][2]string{{"/var/cache/apt/archives", "*.deb"}, {"/var/cache/apt", "*.bin"}, {"/var/lib/apt/lists", "*_*"}} {
		if err := r.removeMatching(c[0], c[1]); err != nil {
			return fmt.Errorf("clean apt caches: %w", err)
		}
	}
	return nil
}
