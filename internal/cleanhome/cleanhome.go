// Package cleanhome runs test processes where root's home directory is an empty directory.
//
// Why: envd starts the SDKs' commands as login shells (bash -l), and tests run envd on the
// development host itself, as root, where root's dotfiles are whatever the host has. On these
// machines they run pyenv, whose rehash lock is left behind when a test kills a shell that is
// still starting, after which every login shell waits 60 s for it and the tests time out. A
// private mount namespace (unshare(1)) with an empty directory bound over root's home keeps
// the host's dotfiles out without touching them. Without root or unshare, nothing changes.
package cleanhome

import (
	"os"
	"os/exec"
	"os/user"
)

// marker tells a re-executed test binary that it already runs with a clean home.
const marker = "HEARTH_CLEAN_HOME"

// script binds $1 over $2, then runs the rest of its arguments.
const script = `mount --bind "$1" "$2" && shift 2 && exec "$@"`

// Command returns a command that runs name with args in a private mount namespace where
// root's home is an empty directory, and a cleanup for after it has exited. When that is not
// possible it returns the plain command.
func Command(name string, args ...string) (*exec.Cmd, func()) {
	cmd, cleanup, _ := command(name, args...)
	return cmd, cleanup
}

// command is Command, and whether the home is really replaced.
func command(name string, args ...string) (*exec.Cmd, func(), bool) {
	unshare, err := exec.LookPath("unshare")
	if os.Geteuid() != 0 || err != nil {
		return exec.Command(name, args...), func() {}, false
	}
	home := "/root"
	if u, err := user.Lookup("root"); err == nil && u.HomeDir != "" {
		home = u.HomeDir
	}
	empty, err := os.MkdirTemp("", "hearth-clean-home-")
	if err != nil {
		return exec.Command(name, args...), func() {}, false
	}
	full := append([]string{"--mount", "--", "/bin/sh", "-c", script, "sh", empty, home, name}, args...)
	cmd := exec.Command(unshare, full...)
	cmd.Env = append(os.Environ(), marker+"=1")
	return cmd, func() { _ = os.RemoveAll(empty) }, true
}

// Main is for TestMain of packages whose tests start login shells in-process: it re-runs
// the test binary through Command and returns its exit code, or calls run when it already
// runs that way or cannot.
func Main(run func() int) int {
	if os.Getenv(marker) != "" {
		return run()
	}
	cmd, cleanup, ok := command(os.Args[0], os.Args[1:]...)
	defer cleanup()
	if !ok {
		return run()
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		os.Stderr.WriteString("cleanhome: " + err.Error() + "\n")
		return 1
	}
	return 0
}
