package runtime

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// StartSnapshotDriver is implemented by drivers whose template snapshot is taken with the
// template's start command running: they call RunStartCommand on the sandbox they boot for
// it, before the checkpoint. The agent refuses to build templates with a start command on
// drivers without it; it never asks which kind of driver it has.
type StartSnapshotDriver interface {
	StartSnapshots() bool
}

// TemplateDropper is implemented by drivers that keep state of their own per template
// version (gVisor's template snapshots): DropTemplate deletes it when the version is
// deleted. It is a no-op for a version the driver holds nothing of, and the caller makes
// sure no sandbox uses the version.
type TemplateDropper interface {
	DropTemplate(ctx context.Context, name string) error
}

// Defaults of RunStartCommand, as E2B's builder has them.
const (
	// DefaultReadyTimeout bounds the wait for the ready command.
	DefaultReadyTimeout = 10 * time.Minute
	// readyEvery is the pause between two runs of the ready command (E2B: 2 s).
	readyEvery = 500 * time.Millisecond
	// readyRunTimeout bounds one run of the ready command.
	readyRunTimeout = 30 * time.Second
)

// startClient has its own small pool: it only talks to a template's sandbox while it is
// being snapshotted.
var startClient = &http.Client{Transport: &http.Transport{
	DialContext:       (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
	DisableKeepAlives: true,
}}

// RunStartCommand starts t.StartCmd in the background in the freshly booted sandbox whose
// envd is at addr (before its /init: envd has no token yet), as t.User in t.Workdir with
// t.Env, and runs t.ReadyCmd every half second until it exits 0. Without a ready command it
// waits 20 s, as E2B does. It fails if the start command exits non-zero first, or if ready
// does not succeed within timeout (0: DefaultReadyTimeout). The start command keeps running.
func RunStartCommand(ctx context.Context, addr netip.AddrPort, t Template, timeout time.Duration) error {
	if t.StartCmd == "" {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	ready := t.ReadyCmd
	if ready == "" {
		ready = "sleep 20"
	}
	proc := processconnect.NewProcessClient(startClient, "http://"+addr.String())
	user := t.User
	if user == "" {
		user = "user"
	}
	// The start command's stream is followed only to see it fail; it is cut before the
	// checkpoint, and the process (bound to no deadline) keeps running.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	stream, err := proc.Start(sctx, startRequest(t, user, t.StartCmd))
	if err != nil {
		return fmt.Errorf("start command failed: %w", err)
	}
	ended := make(chan error, 1)
	go func() {
		defer stream.Close()
		for stream.Receive() {
			if end := stream.Msg().GetEvent().GetEnd(); end != nil {
				if end.GetExitCode() != 0 {
					ended <- fmt.Errorf("start command failed: %s", endStatus(end))
				} else {
					ended <- nil
				}
				return
			}
		}
		if err := stream.Err(); err != nil && sctx.Err() == nil {
			ended <- fmt.Errorf("start command failed: %w", err)
		}
	}()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-ended:
			if err != nil {
				return err
			}
			ended = nil // exiting 0 early is fine (E2B's own build test does it)
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, readyRunTimeout)
		code, err := runOnce(rctx, proc, t, user, ready)
		cancel()
		if err == nil && code == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for ready command: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			last := fmt.Sprintf("exit code %d", code)
			if err != nil {
				last = err.Error()
			}
			return fmt.Errorf("ready command timed out after %v (last: %s)", timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for ready command: %w", ctx.Err())
		case <-time.After(readyEvery):
		}
	}
}

func endStatus(end *pb.ProcessEvent_EndEvent) string {
	if s := end.GetStatus(); s != "" {
		return s
	}
	return fmt.Sprintf("exit status %d", end.GetExitCode())
}

func startRequest(t Template, user, command string) *connect.Request[pb.StartRequest] {
	off := false
	cfg := &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", command}, Envs: t.Env}
	if t.Workdir != "" {
		cfg.Cwd = &t.Workdir
	}
	req := connect.NewRequest(&pb.StartRequest{Process: cfg, Stdin: &off})
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	return req
}

// runOnce runs command to its end and returns its exit code.
func runOnce(ctx context.Context, proc processconnect.ProcessClient, t Template, user, command string) (int32, error) {
	stream, err := proc.Start(ctx, startRequest(t, user, command))
	if err != nil {
		return -1, err
	}
	defer stream.Close()
	for stream.Receive() {
		if end := stream.Msg().GetEvent().GetEnd(); end != nil {
			return end.GetExitCode(), nil
		}
	}
	if err := stream.Err(); err != nil {
		return -1, err
	}
	return -1, errors.New("envd ended the stream without an exit status")
}
