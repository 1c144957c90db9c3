package hearth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// CommandHandle is a command running in the sandbox.
type CommandHandle struct {
	// PID is the command's process ID in the sandbox.
	PID uint32

	conn   *envdConn
	cancel context.CancelFunc
	done   chan struct{}
	res    *CommandResult
	err    error
}

// eventStream is what Start and Connect streams have in common.
type eventStream interface {
	Receive() bool
	Err() error
	Close() error
}

// startStream and connectStream adapt the two response types to their event.
type startStream struct {
	*connect.ServerStreamForClient[pb.StartResponse]
}

func (s startStream) event() *pb.ProcessEvent { return s.Msg().GetEvent() }

type connectStream struct {
	*connect.ServerStreamForClient[pb.ConnectResponse]
}

func (s connectStream) event() *pb.ProcessEvent { return s.Msg().GetEvent() }

type processStream interface {
	eventStream
	event() *pb.ProcessEvent
}

// startProcess sends a Start request as user and follows its stream. timeout, when set,
// becomes the request's deadline, which envd applies to the process's lifetime.
func startProcess(ctx context.Context, conn *envdConn, req *connect.Request[pb.StartRequest], user string, timeout time.Duration, sink *outputSink) (*CommandHandle, error) {
	setUser(req.Header(), user)
	req.Header().Set(headerKeepalive, keepaliveInterval)
	sctx, cancel := context.WithCancel(ctx)
	if timeout > 0 {
		var c2 context.CancelFunc
		sctx, c2 = context.WithTimeout(sctx, timeout)
		parent := cancel
		cancel = func() { c2(); parent() }
	}
	stream, err := conn.process.Start(sctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", req.Msg.GetProcess().GetCmd(), err)
	}
	return follow(sctx, conn, startStream{stream}, cancel, sink, describeCmd(req.Msg.GetProcess()))
}

func describeCmd(cfg *pb.ProcessConfig) string {
	if args := cfg.GetArgs(); len(args) == 3 && args[1] == "-c" {
		return fmt.Sprintf("command %q", args[2])
	}
	return "process " + cfg.GetCmd()
}

// follow waits for the stream's start event, then consumes the rest in a goroutine.
func follow(ctx context.Context, conn *envdConn, stream processStream, cancel context.CancelFunc, sink *outputSink, what string) (*CommandHandle, error) {
	h := &CommandHandle{conn: conn, cancel: cancel, done: make(chan struct{})}
	for {
		if !stream.Receive() {
			err := stream.Err()
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			cancel()
			_ = stream.Close()
			return nil, fmt.Errorf("start %s: %w", what, err)
		}
		if st := stream.event().GetStart(); st != nil {
			h.PID = st.GetPid()
			break
		}
	}
	go h.consume(ctx, stream, sink, what)
	return h, nil
}

// consume dispatches output until the end event or the end of the stream.
func (h *CommandHandle) consume(ctx context.Context, stream processStream, sink *outputSink, what string) {
	defer close(h.done)
	defer h.cancel()
	defer stream.Close()
	for stream.Receive() {
		ev := stream.event()
		switch {
		case ev.GetData() != nil:
			if err := sink.write(ev.GetData()); err != nil {
				h.err = fmt.Errorf("%s: write output: %w", what, err)
				return
			}
		case ev.GetEnd() != nil:
			end := ev.GetEnd()
			h.res = &CommandResult{
				ExitCode: int(end.GetExitCode()),
				Stdout:   sink.out.String(),
				Stderr:   sink.errOut.String(),
				Status:   end.GetStatus(),
				Error:    end.GetError(),
			}
			if h.res.ExitCode != 0 || !end.GetExited() {
				h.err = &CommandExitError{*h.res}
			}
			return
		}
	}
	err := stream.Err()
	if err == nil {
		err = streamEndCause(ctx)
	}
	h.err = fmt.Errorf("%s (pid %d): %w", what, h.PID, err)
}

// Wait waits for the command to end and returns its result; a non-zero exit also returns a
// *CommandExitError. If ctx ends first, Wait returns ctx's error and the command keeps
// running.
func (h *CommandHandle) Wait(ctx context.Context) (*CommandResult, error) {
	select {
	case <-h.done:
		return h.res, h.err
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for pid %d: %w", h.PID, context.Cause(ctx))
	}
}

// Done is closed when the command has ended or its output stream was cut.
func (h *CommandHandle) Done() <-chan struct{} { return h.done }

// Kill kills the command (SIGKILL).
func (h *CommandHandle) Kill(ctx context.Context) error {
	return signalProcess(ctx, h.conn, h.PID, pb.Signal_SIGNAL_SIGKILL)
}

// Terminate asks the command to stop (SIGTERM).
func (h *CommandHandle) Terminate(ctx context.Context) error {
	return signalProcess(ctx, h.conn, h.PID, pb.Signal_SIGNAL_SIGTERM)
}

// SendStdin writes data to the command's stdin, which Start must have opened
// (CommandOptions.Stdin).
func (h *CommandHandle) SendStdin(ctx context.Context, data []byte) error {
	return sendInput(ctx, h.conn, h.PID, &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: data}})
}

// CloseStdin closes the command's stdin, so a program reading it sees end of file.
func (h *CommandHandle) CloseStdin(ctx context.Context) error {
	_, err := h.conn.process.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSelector(h.PID)}))
	if err != nil {
		return fmt.Errorf("close stdin of pid %d: %w", h.PID, err)
	}
	return nil
}

// Disconnect stops following the command's output; the command keeps running and
// Commands.Connect can follow it again.
func (h *CommandHandle) Disconnect() { h.cancel() }

func sendInput(ctx context.Context, conn *envdConn, pid uint32, in *pb.ProcessInput) error {
	_, err := conn.process.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSelector(pid), Input: in}))
	if err != nil {
		return fmt.Errorf("send input to pid %d: %w", pid, err)
	}
	return nil
}

// outputSink routes output events to the caller's writers and the captured result.
type outputSink struct {
	stdout, stderr io.Writer
	pty            func([]byte)
	capture        bool
	out, errOut    bytes.Buffer
}

func (s *outputSink) write(d *pb.ProcessEvent_DataEvent) error {
	var w io.Writer
	var buf *bytes.Buffer
	var p []byte
	switch o := d.GetOutput().(type) {
	case *pb.ProcessEvent_DataEvent_Stdout:
		w, buf, p = s.stdout, &s.out, o.Stdout
	case *pb.ProcessEvent_DataEvent_Stderr:
		w, buf, p = s.stderr, &s.errOut, o.Stderr
	case *pb.ProcessEvent_DataEvent_Pty:
		if s.pty != nil {
			s.pty(o.Pty)
		}
		return nil
	default:
		return nil
	}
	if s.capture {
		buf.Write(p)
	}
	if w != nil {
		_, err := w.Write(p)
		return err
	}
	return nil
}

// streamEndCause explains a stream that ended without the command's end event. At the
// deadline envd kills the command and ends the stream itself, which can reach the client as a
// clean end of stream a moment before the client's own timer fires: that is the deadline.
func streamEndCause(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return errors.New("output stream ended before the command did")
}
