package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const pauseDefinition = "pause = Client.Pause until it returns (drain, guest sync, checkpoint to disk); " +
	"resume = Client.Connect of the paused sandbox until it returns; resume→exec = from the start " +
	"of Connect until the first Commands.Run(\"true\") afterwards completes. p50 over N cycles of " +
	"one sandbox, idle (nothing but envd) and holding touched memory (a background python3 " +
	"holding os.urandom(N MB), checked alive after the last resume), and idle again with streams " +
	"open: before each pause a background command's output stream and a WebSocket through the " +
	"proxy (the drain ends both at once; before, it waited its 5 s grace for them)."

// memHog allocates and touches mb MB of incompressible memory, says so, and holds it.
func memHog(mb int) string {
	return fmt.Sprintf(`exec python3 -c 'import os,time; b=os.urandom(%d*1000*1000); print("hog-ready", flush=True); time.sleep(3600)'`, mb)
}

// runPause measures an idle sandbox, then one holding each of hogMB. Every size is tried
// even when one fails (a sandbox near its memory limit may not come back), so one failure
// does not hide the other figures; the failures are returned together.
func runPause(ctx context.Context, e *env, cycles int, hogMB []int, s *Section) error {
	var errs []error
	try := func(kind string, mb int, streams bool) {
		if err := pauseCycles(ctx, e, cycles, kind, mb, streams, s); err != nil {
			s.note(fmt.Sprintf("pause/resume (%s)", kind), "FAILED, see below")
			errs = append(errs, fmt.Errorf("%s: %w", kind, err))
		}
	}
	try("idle", 0, false)
	try("background command + WebSocket open", 0, true)
	for _, mb := range hogMB {
		try(fmt.Sprintf("%d MB touched", mb), mb, false)
	}
	return errors.Join(errs...)
}

// openStreams opens what most real sandboxes hold while they are paused: a background
// command whose output the client follows, and a WebSocket through the proxy. Both are
// ended by the pause; close releases what is left of them.
func openStreams(ctx context.Context, t *target) (close func(), err error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h, err := t.sb.Commands.Start(sctx, "while true; do echo tick; sleep 0.1; done", &hearth.CommandOptions{NoCapture: true})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start background command: %w", err)
	}
	hdr := http.Header{}
	t.header(formHeaders, hdr)
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(t.url(formHeaders, "/ws"), "http"),
		&websocket.DialOptions{HTTPClient: newHTTP1Client(1), HTTPHeader: hdr})
	if err == nil {
		if err = conn.Write(dctx, websocket.MessageText, []byte("hi")); err == nil {
			_, _, err = conn.Read(dctx)
		}
	}
	if err != nil {
		h.Disconnect()
		cancel()
		return nil, fmt.Errorf("WebSocket through the proxy: %w", err)
	}
	// Keep reading, as a real client does: that is how it answers the close frame a pause
	// sends (a client that never reads holds the drain for conntrack.DefaultEndGrace).
	go func() {
		for {
			if _, _, err := conn.Read(sctx); err != nil {
				return
			}
		}
	}()
	return func() { conn.CloseNow(); h.Disconnect(); cancel() }, nil
}

func pauseCycles(ctx context.Context, e *env, cycles int, kind string, hogMB int, streams bool, s *Section) error {
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
	var t *target
	if streams {
		if t, err = e.startLoadServer(ctx, sb); err != nil {
			return err
		}
	}
	id := sb.ID
	var pause, resume, toExec samples
	for i := range cycles {
		if streams {
			t.sb = sb
			closeStreams, err := openStreams(ctx, t)
			if err != nil {
				return fmt.Errorf("cycle %d: %w", i, err)
			}
			defer closeStreams()
		}
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
