package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const execDefinition = "round trip of Commands.Run(\"true\") in a running sandbox (bash -l -c true: start " +
	"stream, process start, exit, end event), one after another, by three paths taken in turn so that " +
	"noise falls on all alike: through the public proxy (control plane, then agent), to envd at the " +
	"sandbox's address (no proxy), and, inside the sandbox, the process alone (bash -l -c true, bash " +
	"-c true and /bin/true, timed by the guest clock). The differences are the hops' shares."

// execPath is one way to reach envd.
type execPath struct {
	name string
	sb   *hearth.Sandbox
	d    samples
}

func runExec(ctx context.Context, e *env, t *target, n int, s *Section) error {
	direct := *e.client
	direct.SandboxURL = fmt.Sprintf("http://%s:%d", t.guest, hearth.EnvdPort)
	paths := []*execPath{
		{name: "through the proxy", sb: t.sb},
		{name: "envd direct", sb: direct.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken)},
	}
	for i := range n + 5 {
		for _, p := range paths {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			start := time.Now()
			_, err := p.sb.Commands.Run(cctx, "true", nil)
			el := time.Since(start)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: run %d: %w", p.name, i, err)
			}
			if i >= 5 { // the first few warm up connections
				p.d = append(p.d, el)
			}
		}
	}
	for _, p := range paths {
		s.add(fmt.Sprintf("%s p50 (n=%d)", p.name, n), p.d.pct(50), "ms")
		s.add(fmt.Sprintf("%s p99 (n=%d)", p.name, n), p.d.pct(99), "ms")
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
		s.add(fmt.Sprintf("%s (mean of %d)", c.name, loops), float64(ns)/1e6, "ms")
	}
	return nil
}
