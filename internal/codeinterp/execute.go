package codeinterp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"
)

// kernelOpTimeout bounds the server's own silent runs (environment set-up and clean-up).
const kernelOpTimeout = 30 * time.Second

type executeRequest struct {
	Code      *string           `json:"code"`
	ContextID *string           `json:"context_id"`
	Language  *string           `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request) {
	var req executeRequest
	if err := decodeBody(r, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.Code == nil {
		http.Error(w, `missing "code": send the code to run as a string`, http.StatusBadRequest)
		return
	}
	if req.ContextID != nil && req.Language != nil {
		http.Error(w, "Only one of context_id or language can be provided", http.StatusBadRequest)
		return
	}
	var bad []string
	for name := range req.EnvVars {
		if !validEnvName(name) {
			bad = append(bad, fmt.Sprintf("%q", name))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		http.Error(w, fmt.Sprintf("invalid environment variable name(s) %v: use letters, digits and underscores, not starting with a digit", bad), http.StatusBadRequest)
		return
	}
	var c *codeContext
	if req.ContextID != nil {
		if c = s.lookup(*req.ContextID); c == nil {
			http.Error(w, fmt.Sprintf("Context %s not found", *req.ContextID), http.StatusNotFound)
			return
		}
	} else {
		lang, err := normalizeLanguage(deref(req.Language))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if c, err = s.defaultContext(r.Context(), lang); err != nil {
			http.Error(w, fmt.Sprintf("Failed to create the %s context: %v", lang, err), http.StatusInternalServerError)
			return
		}
	}

	// Headers go out at once: the JS SDK's request timeout runs until they arrive, and the
	// execution timeout only after.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out := newStream(w)
	out.flush()

	// One execution at a time per context; the others wait their turn (sending keepalives,
	// so a client that left is noticed).
	if !s.waitTurn(r.Context(), c, out) {
		return
	}
	defer func() { c.turn <- struct{}{} }()
	s.run(r.Context(), c, req, r.Header.Get("X-Access-Token"), out)
}

func (s *Server) waitTurn(ctx context.Context, c *codeContext, out *stream) bool {
	tick := time.NewTicker(s.cfg.Keepalive)
	defer tick.Stop()
	for {
		select {
		case <-c.turn:
			return true
		case <-tick.C:
			out.keepalive(s.cfg.Keepalive)
		case <-ctx.Done():
			return false
		}
	}
}

// run executes one request in c, which is this request's turn. reqCtx ends when the client
// goes away: the code is then interrupted, and its kernel restarted if it does not stop.
func (s *Server) run(reqCtx context.Context, c *codeContext, req executeRequest, token string, out *stream) {
	defer out.write(line{"type": "end_of_execution"})
	c.mu.Lock()
	gen, removed, loaded := c.gen, c.removed, c.globalsLoaded
	c.mu.Unlock()
	if removed {
		out.write(errorLine("UnexpectedEndOfExecution", "Connection to the execution was closed before the execution was finished"))
		return
	}
	if !loaded {
		s.loadGlobals(c, gen, token)
	}
	pushed := false
	if len(req.EnvVars) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), kernelOpTimeout)
		err := c.k.pushEnv(ctx, req.EnvVars)
		cancel()
		if err != nil {
			out.write(errorLine("EnvironmentError", "could not set env_vars: "+err.Error()))
			return
		}
		pushed = true
	}

	execCtx, cancelExec := context.WithCancel(context.Background())
	defer cancelExec()
	lines := make(chan line, 64)
	done := make(chan error, 1)
	go func() {
		done <- c.k.execute(execCtx, *req.Code, func(l line) {
			select {
			case lines <- l:
			case <-execCtx.Done():
			}
		})
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	clientGone := reqCtx.Done()
	var force <-chan time.Time
	var err error
wait:
	for {
		select {
		case l := <-lines:
			out.write(l)
		case err = <-done:
			break wait
		case <-tick.C:
			out.keepalive(s.cfg.Keepalive)
		case <-clientGone:
			// The SDK aborts on its timeout: stop the code so the next execution is not stuck.
			clientGone = nil
			s.log.Info("client left: interrupting", "context", c.ID)
			if ierr := c.k.interrupt(); ierr != nil {
				s.log.Warn("interrupt", "context", c.ID, "err", ierr)
			}
			force = time.After(s.cfg.InterruptGrace)
		case <-force:
			s.log.Warn("interrupted code did not stop: restarting its kernel", "context", c.ID, "grace", s.cfg.InterruptGrace)
			cancelExec()
			err = <-done
			for len(lines) > 0 {
				<-lines
			}
			s.restartAfter(c, gen)
			return
		}
	}
	for len(lines) > 0 {
		out.write(<-lines)
	}
	if err != nil {
		c.mu.Lock()
		same := c.gen == gen
		c.mu.Unlock()
		if !same {
			// Restarted or removed by a request while running.
			out.write(errorLine("UnexpectedEndOfExecution", "Connection to the execution was closed before the execution was finished"))
			return
		}
		s.log.Warn("kernel failed during an execution: restarting it", "context", c.ID, "err", err)
		out.write(errorLine("ContextRestarting", "Context was restarted"))
		s.restartAfter(c, gen)
		return
	}
	if pushed {
		ctx, cancel := context.WithTimeout(context.Background(), kernelOpTimeout)
		defer cancel()
		if err := c.k.popEnv(ctx); err != nil {
			// A per-call variable must not leak into the next call: a fresh kernel is the
			// only sure way back.
			s.log.Warn("restoring env_vars failed: restarting the kernel", "context", c.ID, "err", err)
			s.restartAfter(c, gen)
		}
	}
}

// restartAfter restarts c's kernel unless something else did since generation gen.
func (s *Server) restartAfter(c *codeContext, gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.removed {
		return
	}
	c.gen++
	c.globalsLoaded = false
	ctx, cancel := context.WithTimeout(context.Background(), kernelStartTimeout)
	defer cancel()
	if err := c.k.restart(ctx); err != nil {
		s.log.Error("kernel restart failed", "context", c.ID, "err", err)
	}
}

// loadGlobals gives c's kernel the sandbox's environment variables (those of Sandbox.create),
// which envd serves on GET /envs. A kernel started before the sandbox was (in a template
// snapshot) lacks them otherwise. On failure the next execution tries again.
func (s *Server) loadGlobals(c *codeContext, gen int, token string) {
	if s.cfg.EnvdURL == "" {
		c.mu.Lock()
		c.globalsLoaded = c.gen == gen
		c.mu.Unlock()
		return
	}
	vars, err := s.fetchEnvs(token)
	if err != nil {
		s.log.Warn("sandbox environment variables unavailable", "err", err)
		return
	}
	for name := range vars {
		if !validEnvName(name) {
			delete(vars, name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), kernelOpTimeout)
	defer cancel()
	if err := c.k.setEnv(ctx, vars); err != nil {
		s.log.Warn("setting the sandbox's environment variables", "context", c.ID, "err", err)
		return
	}
	c.mu.Lock()
	c.globalsLoaded = c.gen == gen
	c.mu.Unlock()
}

func (s *Server) fetchEnvs(token string) (map[string]string, error) {
	req, err := http.NewRequest(http.MethodGet, s.cfg.EnvdURL+"/envs", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Access-Token", token)
	}
	resp, err := s.envd.Do(req)
	if err != nil {
		return nil, fmt.Errorf("envd GET /envs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("envd GET /envs: %s", resp.Status)
	}
	var vars map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return nil, fmt.Errorf("envd GET /envs: %w", err)
	}
	if vars == nil {
		vars = map[string]string{}
	}
	return vars, nil
}

// stream writes NDJSON lines, flushing each, and remembers when it last wrote. After a
// write fails (the client left) it writes nothing more.
type stream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	last   time.Time
	failed bool
	buf    bytes.Buffer
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, rc: http.NewResponseController(w), last: time.Now()}
}

func (s *stream) write(l line) {
	if s.failed {
		return
	}
	s.buf.Reset()
	enc := json.NewEncoder(&s.buf) // Encode ends the line with \n
	enc.SetEscapeHTML(false)
	if err := enc.Encode(l); err != nil {
		s.buf.Reset()
		_ = enc.Encode(errorLine("SerializationError", err.Error()))
	}
	// One write per line: a line (and so a multi-byte character) is never split by us.
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		s.failed = true
		return
	}
	s.flush()
}

func (s *stream) flush() {
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.failed = true
	}
	s.last = time.Now()
}

// keepalive writes a keepalive line when nothing was written for every.
func (s *stream) keepalive(every time.Duration) {
	if time.Since(s.last) >= every {
		s.write(line{"type": "keepalive"})
	}
}
