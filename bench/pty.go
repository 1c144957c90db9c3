package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/confine"
	hearth "github.com/hearthsh/hearth/sdk/go"
)

const ptyDefinition = "keystroke-to-echo: time from calling PTY.SendInput with one byte until that byte " +
	"appears in the PTY's output stream (the tty's echo: the PTY runs `cat >/dev/null`), one byte " +
	"at a time with a pause between, like typing; first idle, then in the same sandbox while " +
	"the load generator (a separate process) drives Jupyter-like traffic through the public " +
	"proxy's header form, open loop at fixed rates: WebSocket messages echoed by the sandbox, " +
	"REST polls of /api, and /blob downloads. ratio = loaded / idle (target: p99 at most 2×, " +
	"reported, not asserted). timeouts = keystrokes not echoed within 5 s (excluded from the " +
	"percentiles, counted here). \"shared transport\" rows: the same through hearth dev's " +
	"benchmark-only proxy whose traffic to the agent shares the HTTP/2 RPC connection."

// echoWaiter collects a terminal's output and waits for bytes to appear in it.
type echoWaiter struct {
	mu     sync.Mutex
	buf    []byte
	notify chan struct{}
}

func newEchoWaiter() *echoWaiter { return &echoWaiter{notify: make(chan struct{}, 1)} }

// onData is the PTY's output callback; it never blocks.
func (w *echoWaiter) onData(p []byte) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// waitFor waits until b appears, consuming output up to and including it.
func (w *echoWaiter) waitFor(ctx context.Context, b []byte, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		w.mu.Lock()
		if i := bytes.Index(w.buf, b); i >= 0 {
			w.buf = w.buf[i+len(b):]
			w.mu.Unlock()
			return true
		}
		w.mu.Unlock()
		select {
		case <-w.notify:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// reset drops output collected so far.
func (w *echoWaiter) reset() {
	w.mu.Lock()
	w.buf = nil
	w.mu.Unlock()
}

// terminal is a PTY in the sandbox running `cat >/dev/null`, ready for keystrokes.
type terminal struct {
	h *hearth.PTYHandle
	w *echoWaiter
}

func openTerminal(ctx context.Context, sb *hearth.Sandbox) (*terminal, error) {
	w := newEchoWaiter()
	h, err := sb.PTY.Create(ctx, hearth.PTYSize{Cols: 120, Rows: 40}, w.onData, nil)
	if err != nil {
		return nil, fmt.Errorf("open terminal: %w", err)
	}
	t := &terminal{h: h, w: w}
	fail := func(err error) (*terminal, error) {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = h.Kill(kctx)
		cancel()
		return nil, err
	}
	// Wait for the shell, then replace it with cat; the marker is echoed, then printed.
	if err := h.SendInput(ctx, []byte("echo pty-ready-$((6*7)); exec cat >/dev/null\n")); err != nil {
		return fail(fmt.Errorf("start cat in the terminal: %w", err))
	}
	if !w.waitFor(ctx, []byte("pty-ready-42"), 20*time.Second) {
		return fail(fmt.Errorf("terminal did not run the shell command within 20 s"))
	}
	time.Sleep(300 * time.Millisecond)
	w.reset()
	return t, nil
}

// keystrokes are what sample measured: each echoed keystroke's time until its echo, and
// until SendInput returned (the input path alone: client, proxies, envd writing to the
// PTY), and how many were never echoed.
type keystrokes struct {
	echo, send samples
	lost       int
}

func (k *keystrokes) addAll(o keystrokes) {
	k.echo = append(k.echo, o.echo...)
	k.send = append(k.send, o.send...)
	k.lost += o.lost
}

// sample types n keystrokes gap apart.
func (t *terminal) sample(ctx context.Context, n int, gap time.Duration) (keystrokes, error) {
	var k keystrokes
	const alphabet = "abcdefghijklmnopqrstuvwxyz"
	for i := range n {
		if ctx.Err() != nil {
			return k, ctx.Err()
		}
		if i > 0 && i%60 == 0 {
			// Keep cat's line short: end it, let the echo of the newline pass, start afresh.
			if err := t.h.SendInput(ctx, []byte("\n")); err != nil {
				return k, fmt.Errorf("send newline: %w", err)
			}
			t.w.waitFor(ctx, []byte("\n"), 5*time.Second)
			time.Sleep(20 * time.Millisecond)
			t.w.reset()
		}
		key := []byte{alphabet[i%len(alphabet)]}
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := t.h.SendInput(sctx, key)
		cancel()
		if err != nil {
			return k, fmt.Errorf("keystroke %d: %w", i, err)
		}
		sent := time.Since(start)
		if t.w.waitFor(ctx, key, 5*time.Second) {
			k.echo = append(k.echo, time.Since(start))
			k.send = append(k.send, sent)
		} else {
			k.lost++
			t.w.reset()
		}
		sleepCtx(ctx, gap)
	}
	return k, nil
}

// ptyConfig is how the PTY section samples and loads.
type ptyConfig struct {
	Samples int
	Gap     time.Duration
	Load    loadParams
	// SharedProxy, when set, is the URL of hearth dev's benchmark-only second proxy
	// (--bench-shared-proxy-listen), whose traffic to the agent shares the HTTP/2 RPC
	// transport: the section then measures idle and loaded again through it, in the same
	// sandbox, as the A/B of the separated transports.
	SharedProxy string
	// Wrap prefixes the load generator's command, e.g. "taskset -c 1".
	Wrap string
	// Direct makes the terminal talk to envd at the sandbox's address, bypassing the proxy
	// (an investigation: which hop adds the latency).
	Direct bool
	// DirectSockets, with Direct, reaches envd over its host socket, found under this
	// sandboxes dir, instead of the sandbox's address (off the proxies and the sandbox's
	// network stack).
	DirectSockets string
	// OtherSandbox sends the load to a second sandbox (an investigation: is the contention
	// inside the terminal's sandbox or on the shared path).
	OtherSandbox bool
	// GuestCPU runs that many busy loops inside the terminal's sandbox during the loaded
	// phase (an investigation: CPU contention inside the sandbox, without network load).
	GuestCPU int
	// Probe also times small direct GETs of the terminal sandbox's /api during both phases
	// (an investigation: is the sandbox's network path slow, or the terminal's?).
	Probe bool
	// Hops adds two arms taking turns with the others in the same run, under the same load
	// through the public proxy: a terminal through the agent's proxy alone (what the control
	// plane's proxy sends it), and one straight to envd's host socket under HopsSockets (no
	// proxy). The differences between the arms are each hop's share (an investigation).
	Hops        bool
	HopsSockets string
	// AgentProxy and AgentToken reach the agent's proxy for the Hops arm.
	AgentProxy, AgentToken string
}

// ptyArm is one path measured idle and loaded: the terminal's sandbox handle and the proxy
// URL the load goes through, and what it measured over the rounds.
type ptyArm struct {
	name     string // prefix of the section's rows; "" for the headline arm
	sb       *hearth.Sandbox
	proxyURL string
	term     *terminal

	idle, loaded       keystrokes
	idleBusy, loadBusy []float64
	load               loadStats // summed over the rounds
	cpu                map[string]float64
}

// ptyRounds is how many times each arm is measured idle then loaded, arms taking turns
// (A B, then B A), so that other work on the host falls on both alike.
const ptyRounds = 2

// runPTY measures keystroke-to-echo idle, then under load, in the work sandbox; with
// pc.SharedProxy, also through the shared-transport proxy, the arms taking turns.
func runPTY(ctx context.Context, e *env, t *target, pc ptyConfig, s *Section) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	sb := t.sb
	if pc.Direct {
		c := *e.client
		c.SandboxURL = fmt.Sprintf("http://%s:%d", t.guest, hearth.EnvdPort)
		if pc.DirectSockets != "" {
			sock := filepath.Join(pc.DirectSockets, t.sb.ID, "runtime", "envd", "envd.sock")
			c.HTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return confine.Dial(ctx, nil, sock) // root in the sandbox controls that directory
			}}}
			s.note("terminal path", "envd's host socket (proxies bypassed)")
		}
		sb = c.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken)
	}
	lt := t
	if pc.OtherSandbox {
		other, err := e.create(ctx, 10*time.Minute)
		if err != nil {
			return fmt.Errorf("second sandbox: %w", err)
		}
		defer e.kill(context.WithoutCancel(ctx), other.ID)
		if lt, err = e.startLoadServer(ctx, other); err != nil {
			return fmt.Errorf("second sandbox: %w", err)
		}
		s.note("load target", "a second sandbox")
	}
	arms := []*ptyArm{{name: "", sb: sb, proxyURL: proxyBase}}
	if pc.SharedProxy != "" {
		c := *e.client
		c.SandboxURL = pc.SharedProxy
		arms = append(arms, &ptyArm{name: "shared transport: ", sb: c.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken), proxyURL: pc.SharedProxy})
	}
	if pc.Hops {
		if pc.AgentProxy == "" || pc.HopsSockets == "" {
			return errors.New("-pty-hops needs -agent-proxy, -agent-token and -sandboxes-dir (scripts/bench.sh passes them)")
		}
		c := *e.client
		c.SandboxURL = "http://" + pc.AgentProxy
		c.HTTP = &http.Client{Transport: agentProxyTransport{id: t.sb.ID, token: t.sb.Info().EnvdAccessToken, agentToken: pc.AgentToken}}
		arms = append(arms, &ptyArm{name: "agent proxy only: ", sb: c.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken), proxyURL: proxyBase})
		sock := filepath.Join(pc.HopsSockets, t.sb.ID, "runtime", "envd", "envd.sock")
		d := *e.client
		d.SandboxURL = fmt.Sprintf("http://%s:%d", t.guest, hearth.EnvdPort)
		d.HTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return confine.Dial(ctx, nil, sock)
		}}}
		arms = append(arms, &ptyArm{name: "envd socket, no proxy: ", sb: d.Attach(t.sb.ID, t.sb.Info().EnvdAccessToken), proxyURL: proxyBase})
	}
	for _, a := range arms {
		term, err := openTerminal(ctx, a.sb)
		if err != nil {
			return fmt.Errorf("%s%w", a.name, err)
		}
		a.term, a.cpu = term, map[string]float64{}
		defer func() {
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = term.h.Kill(kctx)
			cancel()
		}()
		if _, err := term.sample(ctx, 20, pc.Gap); err != nil { // warm up connections
			return fmt.Errorf("%s%w", a.name, err)
		}
	}
	per := max(pc.Samples/ptyRounds, 1)
	for r := range ptyRounds {
		for i := range arms {
			a := arms[i]
			if r%2 == 1 {
				a = arms[len(arms)-1-i]
			}
			if err := a.round(ctx, t, lt, pc, per, s); err != nil {
				return fmt.Errorf("%sround %d: %w", a.name, r+1, err)
			}
		}
	}
	for _, a := range arms {
		a.report(pc, s)
	}
	if len(arms) == 2 {
		s.add("A/B loaded p50 shared / isolated", ratio(arms[1].loaded.echo.pct(50), arms[0].loaded.echo.pct(50)), "×")
		s.add("A/B loaded p99 shared / isolated", ratio(arms[1].loaded.echo.pct(99), arms[0].loaded.echo.pct(99)), "×")
	}
	s.add("target p99 loaded/idle (reported, not asserted)", 2, "× at most")
	if pc.Direct && pc.DirectSockets == "" {
		s.note("terminal path", "direct to envd (proxy bypassed)")
	}
	if pc.Load.Form != formHeaders {
		s.note("load path", string(pc.Load.Form))
	}
	if pc.Wrap != "" {
		s.note("load generator wrapper", pc.Wrap)
	}
	return nil
}

// round samples the arm's terminal idle, then while the load generator drives pc.Load at
// lt through the arm's proxy.
func (a *ptyArm) round(ctx context.Context, t, lt *target, pc ptyConfig, n int, s *Section) error {
	stopProbe := probe(ctx, t, pc.Probe, s, a.name+"idle")
	idleCPU := startCPUMeter()
	idle, err := a.term.sample(ctx, n, pc.Gap)
	a.idleBusy = append(a.idleBusy, idleCPU.percent())
	stopProbe()
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	a.idle.addAll(idle)

	for range pc.GuestCPU {
		// Bounded by timeout(1) whatever happens to this process; killed below.
		if err := startBackground(ctx, t.sb, "exec timeout 120 sh -c ': benchbusy; while :; do :; done'", nil); err != nil {
			return fmt.Errorf("guest busy loop: %w", err)
		}
	}
	if pc.GuestCPU > 0 {
		s.note("in-sandbox busy loops", fmt.Sprint(pc.GuestCPU))
		defer func() {
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_, _ = t.sb.Commands.Run(kctx, "pkill -f benchbusy || true", nil)
			cancel()
		}()
	}
	lp, err := startLoadProc(ctx, lt, a.proxyURL, pc.Load, strings.Fields(pc.Wrap))
	if err != nil {
		return err
	}
	sleepCtx(ctx, 2*time.Second) // let the schedules settle
	snap := takeCPUSnapshot()
	stopProbe = probe(ctx, t, pc.Probe, s, a.name+"loaded")
	loadedCPU := startCPUMeter()
	loaded, serr := a.term.sample(ctx, n, pc.Gap)
	a.loadBusy = append(a.loadBusy, loadedCPU.percent())
	stopProbe()
	for _, c := range snap.coresSince(os.Getpid(), lp.pid()) {
		a.cpu[c.Group] += c.Cores / ptyRounds
	}
	st, lerr := lp.stop()
	if serr != nil {
		return fmt.Errorf("loaded: %w", serr)
	}
	if lerr != nil {
		return lerr
	}
	a.loaded.addAll(loaded)
	a.load.Seconds += st.Seconds
	a.load.WSSent += st.WSSent
	a.load.WSMsgs += st.WSMsgs
	a.load.APIReqs += st.APIReqs
	a.load.BlobBytes += st.BlobBytes
	a.load.Skipped += st.Skipped
	a.load.Errors += st.Errors
	if a.load.FirstErr == "" {
		a.load.FirstErr = st.FirstErr
	}
	return nil
}

// report adds the arm's rows.
func (a *ptyArm) report(pc ptyConfig, s *Section) {
	n, idle, loaded, st, p := a.name, a.idle.echo, a.loaded.echo, a.load, pc.Load
	s.add(n+"idle p50", idle.pct(50), "ms")
	s.add(n+"idle p99", idle.pct(99), "ms")
	s.add(n+"loaded p50", loaded.pct(50), "ms")
	s.add(n+"loaded p99", loaded.pct(99), "ms")
	s.add(n+"ratio p50 loaded/idle", ratio(loaded.pct(50), idle.pct(50)), "×")
	s.add(n+"ratio p99 loaded/idle", ratio(loaded.pct(99), idle.pct(99)), "×")
	s.add(n+"SendInput returned, idle p50 / p99", a.idle.send.pct(50), fmt.Sprintf("/ %.2f ms", a.idle.send.pct(99)))
	s.add(n+"SendInput returned, loaded p50 / p99", a.loaded.send.pct(50), fmt.Sprintf("/ %.2f ms", a.loaded.send.pct(99)))
	s.add(n+"samples idle / loaded", float64(len(idle)), fmt.Sprintf("/ %d (%d rounds, arms in turn)", len(loaded), ptyRounds))
	s.add(n+"timeouts idle / loaded", float64(a.idle.lost), fmt.Sprintf("/ %d", a.loaded.lost))
	s.add(n+"host CPU busy idle / loaded", mean(a.idleBusy), fmt.Sprintf("/ %.0f %%", mean(a.loadBusy)))
	s.add(n+"load: WebSocket echoes", float64(st.WSMsgs)/st.Seconds, fmt.Sprintf("msg/s (offered %.0f over %d connections)", p.WSRate, p.WS))
	s.add(n+"load: /api polls", float64(st.APIReqs)/st.Seconds, fmt.Sprintf("req/s (offered %.0f)", p.PollRate))
	s.add(n+"load: /blob downloads", float64(st.BlobBytes)/1e6/st.Seconds, fmt.Sprintf("MB/s (offered %.0f in %.1f MB GETs)", p.DownloadMBps, float64(p.ChunkBytes)/1e6))
	s.add(n+"load: skipped (late or over the in-flight bound) / errors", float64(st.Skipped), fmt.Sprintf("/ %d", st.Errors))
	if st.FirstErr != "" {
		s.note(n+"load: first error", oneLine(st.FirstErr, 80))
	}
	cpu := make([]cpuShare, 0, len(a.cpu))
	for g, c := range a.cpu {
		cpu = append(cpu, cpuShare{g, c})
	}
	sort.Slice(cpu, func(i, j int) bool { return cpu[i].Cores > cpu[j].Cores })
	for i, c := range cpu {
		if i == 6 {
			break
		}
		s.add(n+"cpu while loaded: "+c.Group, c.Cores, "cores")
	}
}

// mean of a few values (NaN for none).
func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}
