package sudo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain makes the test binary a sudo client when it runs under the name sudo, so the
// tests drive real client processes against a real server.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "sudo" {
		os.Exit(Main(os.Args[1:], "test"))
	}
	os.Exit(m.Run())
}

// The callers of the tests: nobody, who is allowed through its primary group nogroup, and
// nobody again against a server whose group it is not in.
const (
	nobodyUID   = 65534
	allowGroup  = "nogroup"
	refuseGroup = "root"
)

type fixture struct {
	dir  string // 0755, the callers' working directory
	sudo string // the test binary, as dir/bin/sudo
	sock string
}

// newFixture starts a server with group as its policy and puts a sudo client where nobody
// can run it.
func newFixture(t *testing.T, group string) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server runs commands as root for an unprivileged caller")
	}
	dir, err := os.MkdirTemp("", "hearth-sudo-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, sudo: filepath.Join(dir, "bin", "sudo"), sock: filepath.Join(dir, "run", "sudo.sock")}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(f.sudo), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, self, f.sudo)
	srv, err := Listen(Config{
		Path: f.sock, Group: group, Log: slog.New(slog.DiscardHandler),
		SandboxVars: func() map[string]string { return map[string]string{"FROM_INIT": "sandbox-wide"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return f
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// command is `sudo args...` run by nobody in f.dir with env on top of a minimal environment.
func (f *fixture) command(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(f.sudo, args...)
	cmd.Dir = f.dir
	cmd.Env = append([]string{SocketEnv + "=" + f.sock, "PATH=/usr/bin:/bin", "HOME=/nonexistent", "TERM=xterm-test"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{nobodyUID}}}
	return cmd
}

type outcome struct {
	stdout, stderr string
	code           int
	signal         syscall.Signal // set when sudo died by a signal
}

func (f *fixture) run(t *testing.T, stdin string, env []string, args ...string) outcome {
	t.Helper()
	cmd := f.command(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("sudo %v did not end; stderr: %s", args, errb.String())
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	o := outcome{stdout: out.String(), stderr: errb.String(), code: ws.ExitStatus()}
	if ws.Signaled() {
		o.signal = ws.Signal()
	}
	return o
}

func TestSudoRunsCommands(t *testing.T) {
	f := newFixture(t, allowGroup)
	cases := []struct {
		name    string
		args    []string
		env     []string
		stdin   string
		stdout  string
		code    int
		errLike string
	}{
		{name: "runs as root", args: []string{"whoami"}, stdout: "root\n"},
		{name: "-u runs as that user", args: []string{"-u", "nobody", "id", "-u"}, stdout: "65534\n"},
		{name: "-u #uid", args: []string{"-u#65534", "id", "-un"}, stdout: "nobody\n"},
		{name: "exit code passes through", args: []string{"sh", "-c", "exit 7"}, code: 7},
		{name: "-n and -- before the command", args: []string{"-n", "--", "id", "-u"}, stdout: "0\n"},
		{name: "stdin, stdout and stderr are the caller's", args: []string{"sh", "-c", "cat; echo oops >&2"}, stdin: "piped in\n", stdout: "piped in\n", errLike: "oops"},
		{name: "working directory is the caller's", args: []string{"pwd"}, stdout: "<dir>\n"},
		{name: "-D changes it", args: []string{"-D", "/", "pwd"}, stdout: "/\n"},
		{name: "-i starts in the target's home", args: []string{"-i", "pwd"}, stdout: "/root\n"},
		{name: "environment is reset", args: []string{"sh", "-c", `echo "${SECRET:-unset} $HOME $USER $SUDO_USER $SUDO_UID $TERM $FROM_INIT"`}, env: []string{"SECRET=x"},
			stdout: "unset /root root nobody 65534 xterm-test sandbox-wide\n"},
		{name: "PATH is the secure path", args: []string{"sh", "-c", "echo $PATH"}, env: []string{"PATH=/evil"}, stdout: SecurePath + "\n"},
		{name: "-E keeps the caller's environment", args: []string{"-E", "sh", "-c", `echo "$SECRET $HOME $USER"`}, env: []string{"SECRET=x"}, stdout: "x /nonexistent root\n"},
		{name: "-EH keeps it but sets HOME", args: []string{"-EH", "sh", "-c", `echo "$SECRET $HOME"`}, env: []string{"SECRET=x"}, stdout: "x /root\n"},
		{name: "--preserve-env=LIST keeps those", args: []string{"--preserve-env=SECRET", "sh", "-c", `echo "$SECRET ${OTHER:-unset}"`}, env: []string{"SECRET=x", "OTHER=y"}, stdout: "x unset\n"},
		{name: "VAR=value before the command", args: []string{"WHO=me", "sh", "-c", "echo $WHO"}, stdout: "me\n"},
		{name: "-s runs the caller's shell", args: []string{"-s", "echo", "$HOME"}, env: []string{"SHELL=/bin/sh"}, stdout: "/root\n"},
		{name: "unknown command", args: []string{"no-such-command-here"}, code: 1, errLike: "no-such-command-here: command not found"},
		{name: "unknown user", args: []string{"-u", "no-such-user", "true"}, code: 1, errLike: "unknown user no-such-user"},
		{name: "bad option shows the usage", args: []string{"-Z", "true"}, code: 1, errLike: "invalid option -- 'Z'"},
		{name: "unsupported option says why", args: []string{"-b", "true"}, code: 1, errLike: "not supported"},
		{name: "-v succeeds for an allowed caller", args: []string{"-v"}},
		{name: "-k alone does nothing", args: []string{"-k"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := f.run(t, tc.stdin, tc.env, tc.args...)
			want := strings.ReplaceAll(tc.stdout, "<dir>", f.dir)
			if o.stdout != want || o.code != tc.code || o.signal != 0 {
				t.Fatalf("sudo %q: stdout %q code %d signal %v, want %q code %d; stderr: %s", tc.args, o.stdout, o.code, o.signal, want, tc.code, o.stderr)
			}
			if tc.errLike != "" && !strings.Contains(o.stderr, tc.errLike) {
				t.Fatalf("stderr %q does not mention %q", o.stderr, tc.errLike)
			}
			if tc.errLike == "" && o.stderr != "" {
				t.Fatalf("unexpected stderr %q", o.stderr)
			}
		})
	}
}

func TestSudoRefusesOthers(t *testing.T) {
	f := newFixture(t, refuseGroup)
	marker := filepath.Join(f.dir, "ran")
	o := f.run(t, "", nil, "touch", marker)
	if o.code != 1 || !strings.Contains(o.stderr, `nobody may not use sudo: only root and members of group "root" may`) {
		t.Fatalf("code %d stderr %q, want a refusal naming the group", o.code, o.stderr)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused command ran: %v", err)
	}
	if o := f.run(t, "", nil, "-v"); o.code != 1 {
		t.Fatalf("-v for a refused caller: code %d, want 1", o.code)
	}
}

// A signal to sudo reaches the command, and sudo ends as the command did.
func TestSudoSignals(t *testing.T) {
	f := newFixture(t, allowGroup)
	t.Run("SIGTERM reaches the command, whose exit code is sudo's", func(t *testing.T) {
		cmd, lines := f.start(t, "sh", "-c", `trap "exit 42" TERM; echo ready; while :; do sleep 0.05; done`)
		expectLine(t, lines, "ready")
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ws := wait(t, cmd)
		if !ws.Exited() || ws.ExitStatus() != 42 {
			t.Fatalf("sudo ended with %v, want exit 42", ws)
		}
	})
	t.Run("SIGINT kills the command, and sudo dies of it too", func(t *testing.T) {
		cmd, lines := f.start(t, "sh", "-c", "echo ready; exec sleep 60")
		expectLine(t, lines, "ready")
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if ws := wait(t, cmd); !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Fatalf("sudo ended with %v, want death by SIGINT", ws)
		}
	})
	t.Run("a command killed by a signal Go would ignore still kills sudo", func(t *testing.T) {
		o := f.run(t, "", nil, "sh", "-c", "kill -USR1 $$")
		if o.signal != syscall.SIGUSR1 {
			t.Fatalf("sudo ended with code %d signal %v, want death by SIGUSR1; stderr %s", o.code, o.signal, o.stderr)
		}
	})
	t.Run("killing sudo kills the command", func(t *testing.T) {
		cmd, lines := f.start(t, "sh", "-c", "echo $$; exec sleep 60")
		var pid int
		select {
		case l := <-lines:
			if _, err := fmt.Sscan(l, &pid); err != nil {
				t.Fatalf("pid line %q: %v", l, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("command did not start")
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		wait(t, cmd)
		deadline := time.Now().Add(10 * time.Second)
		for unix.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("command %d still runs after its sudo was killed", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// start runs `sudo args...` and delivers its stdout lines.
func (f *fixture) start(t *testing.T, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := f.command(nil, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("sudo stderr: %s", errb.String())
		}
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

func expectLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case l := <-lines:
		if l != want {
			t.Fatalf("got line %q, want %q", l, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q line", want)
	}
}

func wait(t *testing.T, cmd *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("sudo did not end")
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}
