package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// loadPort is where the load server listens in the sandbox.
const loadPort = 8080

// target is a sandbox running the load server, with what it takes to reach it each way.
type target struct {
	sb *hearth.Sandbox
	// guest is the sandbox's address as the host reaches it, without port.
	guest string
	// id is the sandbox's ID (sb may be nil in the load generator process).
	id string
	// token is the traffic access token the public proxy wants for ports other than envd's.
	token string
	// domain is the sandbox domain the API told the SDK (e.g. "hearth.localhost:3002"), for
	// host routing; "" means "localhost".
	domain string
}

// startLoadServer uploads the load server into sb, starts it in the background and waits
// until it answers directly on the guest address.
func (e *env) startLoadServer(ctx context.Context, sb *hearth.Sandbox) (*target, error) {
	uctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	const path = "/home/user/loadserver"
	if _, err := sb.Files.Write(uctx, path, bytes.NewReader(e.loadServer), nil); err != nil {
		return nil, fmt.Errorf("upload load server: %w", err)
	}
	// As root: envd currently leaves uploads owned by root even for the default user, who
	// then may not chmod them.
	if _, err := sb.Commands.Run(uctx, "chmod 755 "+path, &hearth.CommandOptions{User: "root"}); err != nil {
		return nil, fmt.Errorf("chmod load server: %w", err)
	}
	if err := startBackground(ctx, sb, fmt.Sprintf("exec %s -addr 0.0.0.0:%d", path, loadPort), nil); err != nil {
		return nil, fmt.Errorf("start load server: %w", err)
	}
	guest, err := e.guestAddr(ctx, sb.ID)
	if err != nil {
		return nil, err
	}
	t := &target{sb: sb, id: sb.ID, guest: guest, token: sb.Info().TrafficAccessToken, domain: sb.Info().Domain}
	hc := newHTTP1Client(1)
	deadline := time.Now().Add(15 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, t.url(formDirect, "/api"), nil)
		res, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		cancel()
		if err == nil && res.StatusCode == http.StatusOK {
			return t, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("load server on %s:%d did not answer within 15 s (last: %v)", guest, loadPort, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startBackground starts cmd in sb and stops following it, leaving it running. Its request
// carries no deadline (envd would kill the command at it); a timer bounds the start instead.
// ready, when set, is called with the command's stdout until it returns true.
func startBackground(ctx context.Context, sb *hearth.Sandbox, cmd string, ready func(out []byte) bool) error {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	timer := time.AfterFunc(60*time.Second, cancel)
	defer timer.Stop()
	var w *readyWriter
	opts := &hearth.CommandOptions{NoCapture: true}
	if ready != nil {
		w = &readyWriter{check: ready, ok: make(chan struct{})}
		opts.Stdout = w
	}
	h, err := sb.Commands.Start(sctx, cmd, opts)
	if err != nil {
		return err
	}
	defer h.Disconnect()
	if w == nil {
		return nil
	}
	select {
	case <-w.ok:
		return nil
	case <-h.Done():
		_, err := h.Wait(sctx)
		return fmt.Errorf("%q ended before it was ready: %v", cmd, err)
	case <-sctx.Done():
		return fmt.Errorf("%q not ready within 60 s: %w", cmd, sctx.Err())
	}
}

// readyWriter collects output and closes ok once check accepts it.
type readyWriter struct {
	buf   []byte
	check func([]byte) bool
	ok    chan struct{}
	done  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.buf = append(w.buf, p...)
		if w.check(w.buf) {
			w.done = true
			close(w.ok)
		}
	}
	return len(p), nil
}
