package template

import (
	"context"
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
	// configure runs after debootstrap on the finished rootfs directory.
	configure func(ctx context.Context, rootfs string) error
}

// recipes are the templates Hearth knows how to build.
var recipes = map[string]recipe{
	// base mirrors E2B's base template: Debian with the everyday tools, and an unprivileged
	// default user `user` with passwordless sudo that commands run as unless told otherwise.
	"base": {
		suite:   "bookworm",
		variant: "minbase",
		packages: []string{
			"bash", "coreutils", "python3", "python-is-python3", "curl", "git",
			"ca-certificates", "procps", "sudo",
		},
		configure: configureBase,
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
	cmd := exec.CommandContext(ctx, "chroot", rootfs, "useradd",
		"--create-home", "--home-dir", UserHome, "--uid", fmt.Sprint(UserUID),
		"--user-group", "--shell", "/bin/bash", UserName)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("useradd %s: %w: %s", UserName, err, strings.TrimSpace(string(out)))
	}
	sudoers := fmt.Sprintf("%s ALL=(ALL:ALL) NOPASSWD: ALL\n", UserName)
	if err := os.WriteFile(filepath.Join(rootfs, "etc/sudoers.d/hearth-user"), []byte(sudoers), 0o440); err != nil {
		return fmt.Errorf("sudoers: %w", err)
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

// dropAptCaches removes downloaded .debs and package lists: they are only needed to install,
// and dropping them keeps every template and every checkpoint smaller. `apt-get update`
// inside a sandbox refetches lists.
func dropAptCaches(rootfs string) error {
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"} {
		m, _ := filepath.Glob(filepath.Join(rootfs, glob))
		for _, p := range m {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("clean %s: %w", p, err)
			}
		}
	}
	return nil
}
