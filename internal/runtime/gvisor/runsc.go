package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

// runsc invokes the runsc binary for one sandbox directory (or none, for root-wide calls).
//
// Two rules from measuring runsc on this kind of host shape every call:
//   - runsc writes to inherited stdout/stderr files at its own offset, and `create`/`restore
//     --detach` hand their stdio to the long-lived sandbox. So the agent's own stdio or pipes
//     are never passed to calls that spawn a sandbox: they get /dev/null for stdin and an
//     O_APPEND log file in the sandbox dir for stdout/stderr.
//   - errors are only useful with runsc's log, so every error carries the tail of it.
type runsc struct {
	bin      string
	root     string // --root: this agent's private state dir
	platform string
	debug    bool
	log      *slog.Logger
}

// globalArgs are the flags every call for sandbox s needs (the zero Spec for root-wide
// calls). Flags that shape a sandbox must be identical for create, checkpoint and restore.
func (r *runsc) globalArgs(s runtime.Spec) []string {
	args := []string{"--root", r.root, "--platform=" + r.platform, "--network=sandbox", "--host-uds=create"}
	if s.Dir != "" {
		args = append(args,
			// Rootfs writes go to a host file in the sandbox's own dir (unlinked at once, so
			// a crash leaks nothing): the template stays pristine and disk-backed writes do
			// not count as sentry memory. Checkpoints carry the overlay content.
			overlayFlag(s),
			"--log="+filepath.Join(s.Dir, runscLog), "--log-format=text")
		if r.debug {
			args = append(args, "--debug", "--debug-log="+filepath.Join(s.Dir, debugLogDir)+"/")
		}
	}
	return args
}

// overlayFlag is the rootfs overlay of s. Its upper layer is a gVisor tmpfs backed by the
// host file, and size= bounds that tmpfs: past s.DiskMiB, writes in the sandbox fail with
// ENOSPC and the host file stops growing.
func overlayFlag(s runtime.Spec) string {
	f := "--overlay2=root:dir=" + filepath.Join(s.Dir, overlayDir)
	if s.DiskMiB > 0 {
		f += fmt.Sprintf(",size=%dm", s.DiskMiB)
	}
	return f
}

// output runs a short-lived runsc command (state, list, kill, delete, checkpoint) whose
// output the driver reads; those never leave a process holding the pipes.
func (r *runsc) output(ctx context.Context, s runtime.Spec, args ...string) ([]byte, error) {
	full := append(r.globalArgs(s), args...)
	cmd := exec.CommandContext(ctx, r.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), r.fail(s.Dir, args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// spawn runs a runsc command that leaves a sandbox behind (create, restore --detach, start).
// Its stdio goes to /dev/null and the sandbox's own append-only stdio log; the container's
// process (envd) inherits that log as its stdout and stderr.
func (r *runsc) spawn(ctx context.Context, s runtime.Spec, args ...string) error {
	dir := s.Dir
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	logPath := filepath.Join(dir, stdioLog)
	// The sandbox can fill its log tmpfs through envd's stdout; this call's own lines are
	// what its error shows, so they must fit.
	for _, p := range []string{logPath, filepath.Join(dir, runscLog)} {
		if fi, err := os.Stat(p); err == nil && fi.Size() > logKeepBytes {
			_ = os.Truncate(p, 0)
		}
	}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer out.Close()
	mark, _ := out.Seek(0, 2)
	cmd := exec.CommandContext(ctx, r.bin, append(r.globalArgs(s), args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, out, out
	// Own process group: a terminal's Ctrl-C to the agent must not reach sandboxes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return r.fail(dir, args, err, runtime.LogTail(logPath, mark, 8))
	}
	return nil
}

// fail builds an error naming the call, with the call's stderr and the tail of runsc's log.
func (r *runsc) fail(dir string, args []string, err error, stderr string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "runsc %s: %v", strings.Join(args, " "), err)
	se := strings.TrimSpace(stderr)
	if se != "" {
		fmt.Fprintf(&b, "; stderr: %s", clip(lastLines(se, 8)))
	}
	if dir != "" {
		// runsc often logs the same message it prints; only add the log when it says more.
		t := strings.TrimSpace(runtime.LogTail(filepath.Join(dir, runscLog), -1, 8))
		if t != "" && (se == "" || !strings.Contains(t, clip(firstLine(se))[:min(len(firstLine(se)), 60)])) {
			fmt.Fprintf(&b, "; runsc.log: %s", clip(t))
		}
	}
	return &runscError{msg: b.String(), err: err}
}

type runscError struct {
	msg string
	err error
}

func (e *runscError) Error() string { return e.msg }
func (e *runscError) Unwrap() error { return e.err }

// isNotExist reports whether a runsc error says the container does not exist.
func isNotExist(err error) bool {
	var re *runscError
	return errors.As(err, &re) && (strings.Contains(re.msg, "does not exist") ||
		strings.Contains(re.msg, "no such file or directory"))
}

// clip bounds one part of an error message: runsc can print whole specs.
func clip(s string) string {
	const max = 1200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// lastLines keeps the last n lines of s, joined by " | ", for one-line error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
