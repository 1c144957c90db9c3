package hearth

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// PTY runs interactive terminals in a sandbox.
type PTY struct{ conn *envdConn }

// PTYSize is a terminal's size in character cells.
type PTYSize struct {
	Cols, Rows uint32
}

// PTYOptions configure Create. A nil *PTYOptions means the defaults.
type PTYOptions struct {
	// User runs the shell as this Linux user (default: the sandbox's default user).
	User string
	// Cwd is the shell's working directory (default: the user's home).
	Cwd string
	// Envs are added to the shell's environment, after TERM=xterm-256color and LANG=C.UTF-8.
	Envs map[string]string
	// Timeout bounds the terminal's lifetime; zero means no bound beyond ctx's deadline.
	Timeout time.Duration
}

// Create starts an interactive login shell (/bin/bash -i -l, as E2B's SDKs do) on a terminal
// of the given size. onData receives the terminal's output as it arrives, from a goroutine of
// the client's; it must not block for long, since envd cuts off a stream that is not read.
// The terminal's output stream lives as long as ctx.
func (p *PTY) Create(ctx context.Context, size PTYSize, onData func([]byte), opts *PTYOptions) (*PTYHandle, error) {
	if opts == nil {
		opts = &PTYOptions{}
	}
	envs := map[string]string{"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
	for k, v := range opts.Envs {
		envs[k] = v
	}
	cfg := &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-i", "-l"}, Envs: envs}
	if opts.Cwd != "" {
		cfg.Cwd = &opts.Cwd
	}
	req := connect.NewRequest(&pb.StartRequest{
		Process: cfg,
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: size.Cols, Rows: size.Rows}},
	})
	h, err := startProcess(ctx, p.conn, req, opts.User, opts.Timeout, &outputSink{pty: onData})
	if err != nil {
		return nil, fmt.Errorf("create terminal: %w", err)
	}
	return &PTYHandle{PID: h.PID, cmd: h}, nil
}

// PTYHandle is a terminal running in the sandbox.
type PTYHandle struct {
	// PID is the shell's process ID in the sandbox.
	PID uint32
	cmd *CommandHandle
}

// SendInput types data into the terminal.
func (h *PTYHandle) SendInput(ctx context.Context, data []byte) error {
	return sendInput(ctx, h.cmd.conn, h.PID, &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: data}})
}

// Resize changes the terminal's size; the shell gets SIGWINCH.
func (h *PTYHandle) Resize(ctx context.Context, size PTYSize) error {
	_, err := h.cmd.conn.process.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
		Process: pidSelector(h.PID),
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: size.Cols, Rows: size.Rows}},
	}))
	if err != nil {
		return fmt.Errorf("resize terminal of pid %d: %w", h.PID, err)
	}
	return nil
}

// Wait waits for the shell to exit and returns its exit code (-1 when a signal killed it).
// Unlike CommandHandle.Wait, a non-zero exit is not an error: it is how a shell session
// ends. The error reports a stream cut off or ctx ending first.
func (h *PTYHandle) Wait(ctx context.Context) (int, error) {
	res, err := h.cmd.Wait(ctx)
	if res != nil {
		return res.ExitCode, nil
	}
	return -1, err
}

// Done is closed when the shell has exited or its output stream was cut.
func (h *PTYHandle) Done() <-chan struct{} { return h.cmd.Done() }

// Kill kills the shell (SIGKILL).
func (h *PTYHandle) Kill(ctx context.Context) error { return h.cmd.Kill(ctx) }

// Disconnect stops following the terminal's output; the shell keeps running.
func (h *PTYHandle) Disconnect() { h.cmd.Disconnect() }

// Connect follows a terminal started earlier (by this or another client) by its shell's
// pid, e.g. after the sandbox was paused and resumed, which cuts output streams but keeps the
// shell. Output from before the call is not replayed. onData is as for Create.
func (p *PTY) Connect(ctx context.Context, pid uint32, onData func([]byte)) (*PTYHandle, error) {
	req := connect.NewRequest(&pb.ConnectRequest{Process: pidSelector(pid)})
	req.Header().Set(headerKeepalive, keepaliveInterval)
	sctx, cancel := context.WithCancel(ctx)
	stream, err := p.conn.process.Connect(sctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("connect to terminal %d: %w", pid, err)
	}
	h, err := follow(sctx, p.conn, connectStream{stream}, cancel, &outputSink{pty: onData}, fmt.Sprintf("terminal %d", pid))
	if err != nil {
		return nil, err
	}
	return &PTYHandle{PID: h.PID, cmd: h}, nil
}
