package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
	hearth "github.com/hearthsh/hearth/sdk/go"
)

const execDefinition = "round trip of Commands.Run(\"true\") in a running sandbox (bash -l -c true: start " +
	"stream, process start, exit, end event), one after another, by three paths taken in turn so that " +
	"noise falls on all alike: through the public proxy (control plane, then agent), to envd at the " +
	"sandbox's address (no proxy), and the same as root; each also timed to the stream's start event " +
	"(envd has started the process). Then, inside the sandbox, the process alone (bash -l -c true, bash " +
	"-c true and /bin/true, timed by the guest clock), and /bin/true with no shell straight to envd " +
	"(the RPC and one exec, the floor). The differences are the hops' and the login shell's shares."

// execPath is one way to reach envd.
type execPath struct {
	name    string
	sb      *hearth.Sandbox
	opts    *hearth.CommandOptions
	d       samples // request sent → stream ended (the exit event and the end of the stream)
	started samples // request sent → the stream's start event (envd has the pid)
}

func runExec(ctx context.Context, e *env, t *target, n int, s *Section) error {
	direct := *e.client
	direct.SandboxURL = fmt.Sprintf("http://%s:%d", t.guest, hearth.EnvdPort)
	paths := []*execPath{
		{name: "through the proxy", sb: t.sb},
		{name: "envd direct", sb: direct.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken)},
		// root's login profile is not the default user's (Debian's root ~/.profile runs mesg).
		{name: "envd direct as root", sb: direct.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken), opts: &hearth.CommandOptions{User: "root"}},
	}
	for i := range n + 5 {
		for _, p := range paths {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			start := time.Now()
			h, err := p.sb.Commands.Start(cctx, "true", p.opts)
			st := time.Since(start)
			if err == nil {
				_, err = h.Wait(cctx)
			}
			el := time.Since(start)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: run %d: %w", p.name, i, err)
			}
			if i >= 5 { // the first few warm up connections
				p.d = append(p.d, el)
				p.started = append(p.started, st)
			}
		}
	}
	for _, p := range paths {
		s.add(fmt.Sprintf("%s p50 (n=%d)", p.name, n), p.d.pct(50), "ms")
		s.add(fmt.Sprintf("%s p99 (n=%d)", p.name, n), p.d.pct(99), "ms")
		s.add(fmt.Sprintf("%s: to the start event p50", p.name), p.started.pct(50), "ms")
	}
	s.add("proxy hops' share of p50", paths[0].d.pct(50)-paths[1].d.pct(50), "ms")

	// The process alone, timed inside the sandbox over a loop, so no hop is in it.
	const loops = 50
	for _, c := range []struct{ name, cmd string }{
		{"in sandbox: bash -l -c true", "bash -l -c true"},
		{"in sandbox: bash -c true", "bash -c true"},
		{"in sandbox: /bin/true", "/bin/true"},
	} {
		script := fmt.Sprintf("s=$(date +%%s%%N); for i in $(seq %d); do %s; done; e=$(date +%%s%%N); echo $(( (e - s) / %d ))", loops, c.cmd, loops)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		res, err := t.sb.Commands.Run(cctx, script, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(res.Stdout), 10, 64)
		if err != nil {
			return fmt.Errorf("%s: output %q: %w", c.name, res.Stdout, err)
		}
		ms := float64(ns) / 1e6
		s.add(fmt.Sprintf("%s (mean of %d)", c.name, loops), ms, "ms")
		if c.cmd == "bash -l -c true" {
			// What the process alone does not explain: envd's RPC, spawn and reaping, and the
			// loop's own fork (the loop pays one fork per command too, so this is a floor).
			s.add("envd direct p50 minus the process alone", paths[1].d.pct(50)-ms, "ms")
		}
	}
	raw, err := rawTrue(ctx, direct.SandboxURL, t.sb.Info().EnvdAccessToken, n)
	if err != nil {
		return fmt.Errorf("envd direct, /bin/true: %w", err)
	}
	s.add(fmt.Sprintf("envd direct, /bin/true with no shell p50 (n=%d)", n), raw.pct(50), "ms")
	s.add("bash -l's share of envd direct p50", paths[1].d.pct(50)-raw.pct(50), "ms")
	return nil
}

// rawTrue times n Start streams of /bin/true, with no shell, straight to envd at base: the
// RPC, envd's spawn of one small program, its exit and the stream's end. Against the bash -l
// path it shows what the login shell costs over the floor of one exec.
func rawTrue(ctx context.Context, base, token string, n int) (samples, error) {
	client := processconnect.NewProcessClient(http.DefaultClient, base)
	var d samples
	for i := range n + 5 {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		req := connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}})
		if token != "" {
			req.Header().Set("X-Access-Token", token)
		}
		err := drainStart(cctx, client, req)
		el := time.Since(start)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		if i >= 5 {
			d = append(d, el)
		}
	}
	return d, nil
}

// drainStart follows a Start stream to its end and fails unless the process exited 0.
func drainStart(ctx context.Context, c processconnect.ProcessClient, req *connect.Request[pb.StartRequest]) error {
	stream, err := c.Start(ctx, req)
	if err != nil {
		return err
	}
	defer stream.Close()
	exited := false
	for stream.Receive() {
		if end := stream.Msg().GetEvent().GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				return fmt.Errorf("exit code %d", end.GetExitCode())
			}
			exited = true
		}
	}
	if err := stream.Err(); err != nil {
		return err
	}
	if !exited {
		return errors.New("stream ended with no end event")
	}
	return nil
}
