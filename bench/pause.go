package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const pauseDefinition = "pause = Client.Pause until it returns (drain, guest sync, checkpoint to disk); " +
	"resume = Client.Connect of the paused sandbox until it returns; resume→exec = from the start " +
	"of Connect until the first Commands.Run(\"true\") afterwards completes. p50 over N cycles of " +
	"one sandbox, idle (nothing but envd) and holding touched memory (a background python3 " +
	"holding os.urandom(N MB), checked alive after the last resume)."

// memHog allocates and touches mb MB of incompressible memory, says so, and holds it.
func memHog(mb int) string {
	return fmt.Sprintf(`exec python3 -c 'import os,time; b=os.urandom(%d*1000*1000); print("hog-ready", flush=True); time.sleep(3600)'`, mb)
}

// runPause measures an idle sandbox, then one holding each of hogMB. Every size is tried
// even when one fails (a sandbox near its memory limit may not come back), so one failure
// does not hide the other figures; the failures are returned together.
func runPause(ctx context.Context, e *env, cycles int, hogMB []int, s *Section) error {
	var errs []error
	for _, mb := range append([]int{0}, hogMB...) {
		kind := "idle"
		if mb > 0 {
			kind = fmt.Sprintf("%d MB touched", mb)
		}
		if err := pauseCycles(ctx, e, cycles, kind, mb, s); err != nil {
			s.note(fmt.Sprintf("pause/resume (%s)", kind), "FAILED, see below")
			errs = append(errs, fmt.Errorf("%s: %w", kind, err))
		}
	}
	return errors.Join(errs...)
}

func pauseCycles(ctx context.Context, e *env, cycles int, kind string, hogMB int, s *Section) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	sb, err := e.create(ctx, 15*time.Minute)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer e.kill(context.WithoutCancel(ctx), sb.ID)
	hog := hogMB > 0
	if hog {
		err := startBackground(ctx, sb, memHog(hogMB), func(out []byte) bool { return bytes.Contains(out, []byte("hog-ready")) })
		if err != nil {
			return fmt.Errorf("allocate memory: %w", err)
		}
	}
	id := sb.ID
	var pause, resume, toExec samples
	for i := range cycles {
		start := time.Now()
		if err := e.client.Pause(ctx, sb.ID); err != nil {
			return fmt.Errorf("pause %d: %w", i, err)
		}
		pause = append(pause, time.Since(start))
		start = time.Now()
		var resumed bool
		sb, resumed, err = e.client.Connect(ctx, sb.ID, 15*time.Minute)
		if err != nil {
			// Say what the failure left behind: still paused (retryable) or gone.
			state := "unknown"
			gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if info, gerr := e.client.GetSandbox(gctx, id); gerr == nil {
				state = string(info.State)
			} else if hearth.IsNotFound(gerr) {
				state = "gone"
			}
			gcancel()
			return fmt.Errorf("resume %d (the sandbox is %s afterwards): %w", i, state, err)
		}
		resume = append(resume, time.Since(start))
		if !resumed {
			return fmt.Errorf("resume %d: Connect says the sandbox was not paused", i)
		}
		if _, err := sb.Commands.Run(ctx, "true", nil); err != nil {
			return fmt.Errorf("first command after resume %d: %w", i, err)
		}
		toExec = append(toExec, time.Since(start))
	}
	if hog {
		res, err := sb.Commands.Run(ctx, "pgrep -fc 'os.urandom' || true", nil)
		if err != nil || strings.TrimSpace(res.Stdout) == "0" {
			return fmt.Errorf("the memory holder did not survive pause and resume (%v)", err)
		}
	}
	n := fmt.Sprintf(" p50 (%s, n=%d)", kind, cycles)
	s.add("pause"+n, pause.pct(50), "ms")
	s.add("resume"+n, resume.pct(50), "ms")
	s.add("resume→exec"+n, toExec.pct(50), "ms")
	return nil
}
