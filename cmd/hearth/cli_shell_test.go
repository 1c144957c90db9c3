package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// shell drives a real terminal: a pty pair stands in for the user's terminal, the sandbox's
// shell runs in envd, and the local terminal must come back in the mode it started in.
func TestSandboxShellCommand(t *testing.T) {
	e := newCLIEnv(t, true)
	id := e.api.AddSandbox("run00000000000000001", "running", nil)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty on this machine: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 111}); err != nil {
		t.Fatal(err)
	}
	before, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	seen := func(s string) bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(screen.String(), s) }

	done := make(chan cliResult, 1)
	go func() { done <- runShellCLI(t, tty, "sandbox", "shell", id) }()
	// The remote terminal starts at the local size; arithmetic keeps the echo from matching.
	typeInto(t, ptmx, "echo S$(stty size | tr ' ' x)Z\n")
	waitForT(t, "remote terminal sized 33x111", func() bool { return seen("S33x111Z") })
	typeInto(t, ptmx, "exit 5\n")
	select {
	case r := <-done:
		if r.code != 5 {
			t.Errorf("shell exit code %d, want the remote shell's 5 (stderr %q)", r.code, r.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shell did not return after the remote shell exited")
	}
	after, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Error("the local terminal was not restored from raw mode")
	}
}

// runShellCLI runs the CLI with a terminal as stdin and stdout, which shell requires.
func runShellCLI(t *testing.T, tty *os.File, args ...string) cliResult {
	freshCLICommands()
	var errb bytes.Buffer
	rootCmd.SetArgs(args)
	rootCmd.SetIn(tty)
	rootCmd.SetOut(tty)
	rootCmd.SetErr(&errb)
	defer func() { rootCmd.SetIn(nil); rootCmd.SetOut(nil); rootCmd.SetErr(nil); rootCmd.SetArgs(nil) }()
	code := 0
	saved := cliExit
	cliExit = func(c int) { code = c }
	defer func() { cliExit = saved }()
	if err := rootCmd.Execute(); err != nil && code == 0 {
		code = 1
	}
	return cliResult{stderr: errb.String(), code: code}
}

func typeInto(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

func waitForT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
