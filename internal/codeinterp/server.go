// Package codeinterp is the code-interpreter server that runs on port 49999 inside
// code-interpreter sandboxes: the HTTP API of E2B's code interpreter (/execute streaming
// NDJSON, /contexts, /health), so the published @e2b/code-interpreter SDKs work unchanged.
// Each context is one kernel: Debian's ipykernel for python, a persistent bash for bash.
package codeinterp

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed startup.py
var startupScript []byte

// Config configures a Server.
type Config struct {
	// DefaultCwd is the working directory of contexts that name none (E2B: /home/user).
	DefaultCwd string
	// Python is the interpreter with ipykernel (Debian's /usr/bin/python3).
	Python string
	// EnvdURL is envd inside the sandbox, asked for the sandbox's environment variables
	// (GET /envs); empty means none are fetched.
	EnvdURL string
	// RunDir holds kernels' connection files; it must be private to the server's user.
	RunDir string
	// Env is the environment kernels start with; nil means the server's own.
	Env []string
	// InterruptGrace is how long an interrupted execution may take to stop before its
	// kernel is restarted; 0 means 10 s.
	InterruptGrace time.Duration
	// Keepalive is the longest a stream stays silent (E2B: 5 s); 0 means that.
	Keepalive time.Duration
	Log       *slog.Logger
}

// Server serves the code-interpreter API.
type Server struct {
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	ready atomic.Bool
	envd  *http.Client

	mu       sync.Mutex
	contexts []*codeContext // in creation order, as GET /contexts lists them
	defaults map[string]*codeContext
	// creating serialises the lazy creation of each language's default context.
	creating map[string]*sync.Mutex
}

// codeContext is one kernel and what the API says about it.
type codeContext struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`

	k    kernel
	turn chan struct{} // holds one token: the execution that has it runs

	mu            sync.Mutex
	gen           int // bumped by every restart and by removal
	removed       bool
	globalsLoaded bool
}

// New returns a server; call Start before serving it.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.InterruptGrace == 0 {
		cfg.InterruptGrace = 10 * time.Second
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = 5 * time.Second
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.RunDir == "" {
		return nil, errors.New("code interpreter: no run directory")
	}
	if fi, err := os.Stat(cfg.DefaultCwd); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("code interpreter: default cwd %q is not a directory", cfg.DefaultCwd)
	}
	startup := filepath.Join(cfg.RunDir, "ipython", "profile_default", "startup")
	if err := os.MkdirAll(startup, 0o700); err != nil {
		return nil, fmt.Errorf("code interpreter: %w", err)
	}
	if err := os.WriteFile(filepath.Join(startup, "00-hearth.py"), startupScript, 0o600); err != nil {
		return nil, fmt.Errorf("code interpreter: %w", err)
	}
	cfg.Env = append(withoutEnv(cfg.Env, "IPYTHONDIR"),
		"IPYTHONDIR="+filepath.Join(cfg.RunDir, "ipython"),
		// debugpy's warning about frozen modules is noise on every kernel start.
		"PYDEVD_DISABLE_FILE_VALIDATION=1")
	s := &Server{
		cfg:      cfg,
		log:      cfg.Log,
		mux:      http.NewServeMux(),
		envd:     &http.Client{Timeout: 5 * time.Second},
		defaults: map[string]*codeContext{},
		creating: map[string]*sync.Mutex{},
	}
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("POST /execute", s.execute)
	s.mux.HandleFunc("POST /contexts", s.createContext)
	s.mux.HandleFunc("GET /contexts", s.listContexts)
	s.mux.HandleFunc("POST /contexts/{id}/restart", s.restartContext)
	s.mux.HandleFunc("DELETE /contexts/{id}", s.removeContext)
	return s, nil
}

// Start creates the default python context; /health answers 200 only after it.
func (s *Server) Start(ctx context.Context) error {
	if _, err := s.defaultContext(ctx, langPython); err != nil {
		return fmt.Errorf("code interpreter: default python context: %w", err)
	}
	s.ready.Store(true)
	return nil
}

// Close ends every kernel.
func (s *Server) Close() {
	s.mu.Lock()
	cs := s.contexts
	s.contexts, s.defaults = nil, map[string]*codeContext{}
	s.mu.Unlock()
	for _, c := range cs {
		c.k.close()
	}
}

func withoutEnv(env []string, name string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// ServeHTTP answers CORS like E2B's server (any origin, method and header) and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "*")
	h.Set("Access-Control-Allow-Headers", "*")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "starting: the default python context is not ready yet", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, "OK")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// newContext starts a kernel for language in cwd and lists it.
func (s *Server) newContext(ctx context.Context, language, cwd string) (*codeContext, error) {
	start := kernelFactories[language]
	k, err := start(ctx, kernelConfig{cwd: cwd, env: s.cfg.Env, runDir: s.cfg.RunDir, python: s.cfg.Python})
	if err != nil {
		return nil, err
	}
	c := &codeContext{ID: newID(), Language: language, Cwd: cwd, k: k, turn: make(chan struct{}, 1)}
	c.turn <- struct{}{}
	s.mu.Lock()
	s.contexts = append(s.contexts, c)
	s.mu.Unlock()
	s.log.Info("context created", "id", c.ID, "language", language, "cwd", cwd)
	return c, nil
}

// defaultContext returns language's default context, creating it on first use or after it
// was removed (E2B then fails with "Context None not found"; recreating it is kinder).
func (s *Server) defaultContext(ctx context.Context, language string) (*codeContext, error) {
	s.mu.Lock()
	lock := s.creating[language]
	if lock == nil {
		lock = &sync.Mutex{}
		s.creating[language] = lock
	}
	s.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	s.mu.Lock()
	c := s.defaults[language]
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := s.newContext(ctx, language, s.cfg.DefaultCwd)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.defaults[language] = c
	s.mu.Unlock()
	return c, nil
}

func (s *Server) lookup(id string) *codeContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.contexts {
		if c.ID == id {
			return c
		}
	}
	return nil
}

type createRequest struct {
	Language *string `json:"language"`
	Cwd      *string `json:"cwd"`
}

func (s *Server) createContext(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeBody(r, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	lang, err := normalizeLanguage(deref(req.Language))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cwd, err := s.resolveCwd(deref(req.Cwd))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := s.newContext(r.Context(), lang, cwd)
	if err != nil {
		http.Error(w, "Failed to create context: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// resolveCwd makes cwd absolute (relative to the default cwd) and checks it is a directory.
func (s *Server) resolveCwd(cwd string) (string, error) {
	if cwd == "" {
		return s.cfg.DefaultCwd, nil
	}
	if !filepath.IsAbs(cwd) {
		cwd = filepath.Join(s.cfg.DefaultCwd, cwd)
	}
	fi, err := os.Stat(cwd)
	if err != nil {
		return "", fmt.Errorf("cwd %s: %w", cwd, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("cwd %s: not a directory", cwd)
	}
	return filepath.Clean(cwd), nil
}

func (s *Server) listContexts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list := make([]*codeContext, len(s.contexts))
	copy(list, s.contexts)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) restartContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := s.lookup(id)
	if c == nil {
		http.Error(w, fmt.Sprintf("Context %s not found", id), http.StatusNotFound)
		return
	}
	if err := c.restart(r.Context()); err != nil {
		http.Error(w, fmt.Sprintf("Failed to restart context %s: %v", id, err), http.StatusInternalServerError)
		return
	}
	s.log.Info("context restarted", "id", id)
	writeJSON(w, http.StatusOK, nil)
}

// restart replaces the kernel: an execution running in it ends with an error.
func (c *codeContext) restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errors.New("the context was removed")
	}
	c.gen++
	c.globalsLoaded = false
	return c.k.restart(ctx)
}

func (s *Server) removeContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	var c *codeContext
	for i, x := range s.contexts {
		if x.ID == id {
			c = x
			s.contexts = append(s.contexts[:i:i], s.contexts[i+1:]...)
			break
		}
	}
	if c != nil && s.defaults[c.Language] == c {
		delete(s.defaults, c.Language)
	}
	s.mu.Unlock()
	if c == nil {
		http.Error(w, fmt.Sprintf("Context %s not found", id), http.StatusNotFound)
		return
	}
	c.mu.Lock()
	c.removed = true
	c.gen++
	c.mu.Unlock()
	c.k.close()
	s.log.Info("context removed", "id", id)
	writeJSON(w, http.StatusOK, nil)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// decodeBody reads a JSON request body of at most 16 MiB; an empty body is an empty object.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validEnvName accepts names every kernel can set: a shell's rules.
func validEnvName(n string) bool { return envNameRE.MatchString(n) }
