package hearth_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func TestRunResults(t *testing.T) {
	sb := sandbox(t)
	tests := []struct {
		name       string
		cmd        string
		opts       *hearth.CommandOptions
		wantCode   int
		wantStdout string
		wantStderr string
		wantStatus string
	}{
		{name: "success", cmd: "echo hello", wantStdout: "hello\n"},
		{name: "stdout and stderr apart", cmd: "echo out; echo err >&2", wantStdout: "out\n", wantStderr: "err\n"},
		{name: "exit code", cmd: "echo failing >&2; exit 3", wantCode: 3, wantStderr: "failing\n"},
		{name: "killed by signal", cmd: "kill -9 $$", wantCode: -1, wantStatus: "signal: killed"},
		{name: "env", cmd: `printf %s "$GREETING"`, opts: &hearth.CommandOptions{Envs: map[string]string{"GREETING": "hi there"}}, wantStdout: "hi there"},
		{name: "cwd", cmd: "pwd", opts: &hearth.CommandOptions{Cwd: "/tmp"}, wantStdout: "/tmp\n"},
		{name: "user", cmd: "id -un", opts: &hearth.CommandOptions{User: "root"}, wantStdout: "root\n"},
		{name: "stdin is empty", cmd: "cat; echo done", wantStdout: "done\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := sb.Commands.Run(ctx, tt.cmd, tt.opts)
			if tt.wantCode == 0 && err != nil {
				t.Fatalf("Run(%q): %v", tt.cmd, err)
			}
			if tt.wantCode != 0 {
				var exit *hearth.CommandExitError
				if !errors.As(err, &exit) {
					t.Fatalf("Run(%q) error = %v, want *CommandExitError", tt.cmd, err)
				}
				if exit.ExitCode != tt.wantCode {
					t.Errorf("CommandExitError.ExitCode = %d, want %d", exit.ExitCode, tt.wantCode)
				}
			}
			if res == nil {
				t.Fatalf("Run(%q) returned no result", tt.cmd)
			}
			if res.ExitCode != tt.wantCode || res.Stdout != tt.wantStdout || res.Stderr != tt.wantStderr {
				t.Errorf("Run(%q) = code %d stdout %q stderr %q, want %d %q %q",
					tt.cmd, res.ExitCode, res.Stdout, res.Stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
			if tt.wantStatus != "" && res.Status != tt.wantStatus {
				t.Errorf("Status = %q, want %q", res.Status, tt.wantStatus)
			}
		})
	}
}

func TestRunUnknownUserFails(t *testing.T) {
	_, err := sandbox(t).Commands.Run(context.Background(), "true", &hearth.CommandOptions{User: "no-such-user-xyz"})
	if err == nil || !hearth.IsUnauthorized(err) || !strings.Contains(err.Error(), "no-such-user-xyz") {
		t.Fatalf("Run as an unknown user: err = %v, want an unauthenticated error naming the user", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the client's output goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A started command's output arrives while it runs, and stdin reaches it.
func TestStartStreamsOutputAndTakesStdin(t *testing.T) {
	sb := sandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out syncBuffer
	h, err := sb.Commands.Start(ctx, `echo ready; read line; echo "got $line"`, &hearth.CommandOptions{Stdout: &out, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	if h.PID == 0 {
		t.Fatal("Start returned pid 0")
	}
	waitFor(t, "the first line before the command ends", 5*time.Second, func() bool { return out.String() == "ready\n" })
	select {
	case <-h.Done():
		t.Fatal("command ended before it was sent input")
	default:
	}
	if err := h.SendStdin(ctx, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	res, err := h.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "ready\ngot hello\n" || out.String() != res.Stdout {
		t.Errorf("stdout = %q (streamed %q), want %q", res.Stdout, out.String(), "ready\ngot hello\n")
	}
}

func TestCloseStdinEndsInput(t *testing.T) {
	sb := sandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := sb.Commands.Start(ctx, "wc -c", &hearth.CommandOptions{Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SendStdin(ctx, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := h.Wait(ctx)
	if err != nil || strings.TrimSpace(res.Stdout) != "5" {
		t.Fatalf("wc -c after 5 bytes and EOF = %+v, %v; want 5", res, err)
	}
}

func TestKillAndTimeoutEndCommands(t *testing.T) {
	sb := sandbox(t)
	tests := []struct {
		name string
		opts *hearth.CommandOptions
		stop func(context.Context, *hearth.CommandHandle) error
	}{
		{name: "kill", stop: func(ctx context.Context, h *hearth.CommandHandle) error { return h.Kill(ctx) }},
		{name: "terminate", stop: func(ctx context.Context, h *hearth.CommandHandle) error { return h.Terminate(ctx) }},
		{name: "timeout", opts: &hearth.CommandOptions{Timeout: 300 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			h, err := sb.Commands.Start(ctx, "sleep 30", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.stop != nil {
				if err := tt.stop(ctx, h); err != nil {
					t.Fatal(err)
				}
			}
			_, err = h.Wait(ctx)
			if err == nil {
				t.Fatal("Wait returned no error for a command that was stopped")
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("command took %v to stop", time.Since(start))
			}
		})
	}
}

// Giving up on Run kills the command rather than leaving it behind.
func TestRunCancelKillsCommand(t *testing.T) {
	sb := sandbox(t)
	pidFile := t.TempDir() + "/pid"
	// Give up once the command has started (its PID is written), however slow the host is.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer cancel()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
				return
			}
		}
	}()
	_, err := sb.Commands.Run(ctx, "echo $$ > "+pidFile+"; exec sleep 30", nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run past its context: err = %v, want Canceled", err)
	}
	if b, _ := os.ReadFile(pidFile); len(b) == 0 {
		t.Fatal("the command never started")
	}
	check := func() bool {
		res, err := sb.Commands.Run(context.Background(), "kill -0 $(cat "+pidFile+") 2>/dev/null", nil)
		return err != nil && res != nil && res.ExitCode == 1
	}
	waitFor(t, "the command to be gone", 5*time.Second, check)
}

// Large output streams through without being kept when NoCapture is set.
func TestRunLargeOutputStreams(t *testing.T) {
	sb := sandbox(t)
	var n countingWriter
	res, err := sb.Commands.Run(context.Background(), "head -c 8000000 /dev/zero", &hearth.CommandOptions{Stdout: &n, NoCapture: true})
	if err != nil {
		t.Fatal(err)
	}
	if n != 8000000 || res.Stdout != "" {
		t.Fatalf("streamed %d bytes, captured %d; want 8000000 streamed and none captured", n, len(res.Stdout))
	}
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

// A sandbox with an envd access token refuses requests without it; the handle sends it.
func TestEnvdAccessToken(t *testing.T) {
	e, err := startOwnEnvd(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Init(`{"accessToken":"s3cret"}`); err != nil {
		t.Fatal(err)
	}
	c := hearth.NewClient(hearth.WithSandboxURL(e.URL))
	ctx := context.Background()
	for _, tt := range []struct {
		token string
		ok    bool
	}{{"", false}, {"wrong", false}, {"s3cret", true}} {
		sb := c.Attach("sbx", tt.token)
		_, runErr := sb.Commands.Run(ctx, "true", nil)
		_, writeErr := sb.Files.Write(ctx, "/tmp/hearth-token-test", strings.NewReader("x"), nil)
		for what, err := range map[string]error{"run": runErr, "write": writeErr} {
			if tt.ok && err != nil {
				t.Errorf("%s with token %q: %v", what, tt.token, err)
			}
			if !tt.ok && !hearth.IsUnauthorized(err) {
				t.Errorf("%s with token %q: err = %v, want unauthorized", what, tt.token, err)
			}
		}
	}
}

// A command outlives a client that stops following it, and can be followed again by pid.
func TestDisconnectAndReconnect(t *testing.T) {
	sb := sandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := sb.Commands.Start(ctx, "sleep 0.5; echo late; exit 4", nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Disconnect()
	if _, err := h.Wait(ctx); err == nil {
		t.Fatal("Wait after Disconnect reported the command's end")
	}
	var out syncBuffer
	again, err := sb.Commands.Connect(ctx, h.PID, &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := again.Wait(ctx)
	var exit *hearth.CommandExitError
	if !errors.As(err, &exit) || res.ExitCode != 4 || out.String() != "late\n" {
		t.Fatalf("reconnected: result %+v, err %v, output %q; want exit 4 and the late output", res, err, out.String())
	}
}
