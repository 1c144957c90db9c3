package hearth

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// Commands runs commands in a sandbox through envd's process service.
type Commands struct{ conn *envdConn }

// CommandOptions configure Run and Start. A nil *CommandOptions means the defaults.
type CommandOptions struct {
	// Envs are added to the command's environment.
	Envs map[string]string
	// Cwd is the working directory (default: the user's home, or the sandbox's workdir).
	Cwd string
	// User runs the command as this Linux user (default: the sandbox's default user).
	User string
	// Timeout bounds the command's lifetime: envd kills it when the time is up. Zero means no
	// bound beyond the context's deadline, which envd also enforces.
	Timeout time.Duration
	// Stdout and Stderr, when set, receive the command's output as it arrives, from a
	// goroutine of the client's.
	Stdout, Stderr io.Writer
	// NoCapture leaves Stdout and Stderr out of the CommandResult, for output too large to
	// keep in memory that is streamed to the writers instead.
	NoCapture bool
	// Stdin keeps the command's stdin open for SendStdin (Start only); otherwise stdin is
	// empty, as for a command run with </dev/null.
	Stdin bool
}

// CommandResult is how a command ended.
type CommandResult struct {
	// ExitCode is the command's exit status, or -1 when a signal killed it.
	ExitCode int
	// Stdout and Stderr are the command's whole output, unless NoCapture was set.
	Stdout, Stderr string
	// Status describes the end as envd reports it, e.g. "exit status 1" or "signal: killed".
	Status string
	// Error is envd's explanation when the command was killed or could not be waited for.
	Error string
}

// CommandExitError is returned, with the result, for a command that exited with a non-zero
// code or was killed.
type CommandExitError struct{ CommandResult }

func (e *CommandExitError) Error() string {
	msg := fmt.Sprintf("command exited with code %d", e.ExitCode)
	if e.ExitCode < 0 && e.Status != "" {
		msg = "command ended: " + e.Status
	}
	if e.CommandResult.Error != "" {
		msg += ": " + e.CommandResult.Error
	} else if tail := lastLine(e.Stderr); tail != "" {
		msg += ": " + tail
	}
	return msg
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// Run runs cmd with /bin/bash -l -c, as E2B's SDKs do, and waits for it to end. Output is
// streamed to opts.Stdout and opts.Stderr as it arrives and returned in the result. A non-zero
// exit returns the result and a *CommandExitError. When ctx ends first, the command is killed
// and ctx's error is returned.
func (c *Commands) Run(ctx context.Context, cmd string, opts *CommandOptions) (*CommandResult, error) {
	h, err := c.Start(ctx, cmd, opts)
	if err != nil {
		return nil, err
	}
	res, err := h.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		// The caller gave up: do not leave the command running. Best effort, on a fresh
		// context since ctx is done.
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = h.Kill(kctx)
		cancel()
	}
	return res, err
}

// Start starts cmd with /bin/bash -l -c and returns once envd reports its pid. The command's
// output stream lives as long as ctx: cancel ctx (or call Disconnect) to stop following it.
// The command itself keeps running until it exits, is killed, or its Timeout or ctx's
// deadline passes.
func (c *Commands) Start(ctx context.Context, cmd string, opts *CommandOptions) (*CommandHandle, error) {
	if opts == nil {
		opts = &CommandOptions{}
	}
	cfg := &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", cmd}, Envs: opts.Envs}
	if opts.Cwd != "" {
		cfg.Cwd = &opts.Cwd
	}
	req := connect.NewRequest(&pb.StartRequest{Process: cfg, Stdin: &opts.Stdin})
	return startProcess(ctx, c.conn, req, opts.User, opts.Timeout, &outputSink{
		stdout: opts.Stdout, stderr: opts.Stderr, capture: !opts.NoCapture,
	})
}

// Kill kills the process with the given pid (SIGKILL).
func (c *Commands) Kill(ctx context.Context, pid uint32) error {
	return signalProcess(ctx, c.conn, pid, pb.Signal_SIGNAL_SIGKILL)
}

// Connect follows a process started earlier (by this or another client) by pid; output from
// before the call is not replayed.
func (c *Commands) Connect(ctx context.Context, pid uint32, stdout, stderr io.Writer) (*CommandHandle, error) {
	req := connect.NewRequest(&pb.ConnectRequest{Process: pidSelector(pid)})
	setUser(req.Header(), "")
	req.Header().Set(headerKeepalive, keepaliveInterval)
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.conn.process.Connect(sctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("connect to process %d: %w", pid, err)
	}
	return follow(sctx, c.conn, connectStream{stream}, cancel, &outputSink{stdout: stdout, stderr: stderr, capture: true}, fmt.Sprintf("process %d", pid))
}

func signalProcess(ctx context.Context, conn *envdConn, pid uint32, sig pb.Signal) error {
	_, err := conn.process.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSelector(pid), Signal: sig}))
	if err != nil {
		return fmt.Errorf("signal process %d: %w", pid, err)
	}
	return nil
}

func pidSelector(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}
