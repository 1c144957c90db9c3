package envd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/files"
	"github.com/hearthsh/hearth/internal/envd/filesystem"
	"github.com/hearthsh/hearth/internal/envd/hoststats"
	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/process"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
	"github.com/hearthsh/hearth/internal/envd/sudo"
	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// Config configures an envd server.
type Config struct {
	Log *slog.Logger
	// DefaultUser runs requests that name no user until /init says otherwise.
	DefaultUser string
	// Reap makes envd reap orphaned processes, as PID 1 must.
	Reap bool
	// SetClock lets /init set the system clock from its timestamp (VM guests, whose clock lags
	// after a resume). Off for envd on a development host.
	SetClock bool
	// StallTimeout bounds how long a process output stream may stay full before it is cut off.
	StallTimeout time.Duration
	// HostSocket, when set, is a Unix socket path in a directory the host shares with the
	// sandbox, served alongside the TCP port once OpenHostSocket is called (see hostSocket).
	HostSocket string
	// SudoSocket, when set, is where envd serves sudo requests from inside the sandbox (see
	// package sudo) once OpenSudo is called. It must be on the sandbox's own filesystem, never
	// in a directory the host shares.
	SudoSocket string
	// SudoGroup is the group whose members may use sudo (sudo.DefaultGroup when empty).
	SudoGroup string
}

// Server is envd's HTTP handler.
type Server struct {
	cfg   Config
	env   *sandboxenv.Env
	stats *hoststats.Sampler
	mux   *http.ServeMux
	fs    *filesystem.Service
	sock  *hostSocket // nil without Config.HostSocket
	procs *process.Service
	sudo  *sudo.Server // nil until OpenSudo

	// agentSecret is the credential of the internal routes (see agentAuthorized); empty
	// until the first /init after a boot sets it.
	agentMu     sync.Mutex
	agentSecret string
}

// Close stops the filesystem watchers clients created and never removed, and the sudo
// socket.
func (s *Server) Close() {
	s.fs.Close()
	if s.sudo != nil {
		_ = s.sudo.Close()
	}
}

// OpenSudo starts serving sudo requests on Config.SudoSocket; it does nothing without one.
func (s *Server) OpenSudo() error {
	if s.cfg.SudoSocket == "" || s.sudo != nil {
		return nil
	}
	srv, err := sudo.Listen(sudo.Config{
		Path:        s.cfg.SudoSocket,
		Group:       s.cfg.SudoGroup,
		SandboxVars: s.env.Vars,
		Spawn: func(cmd *exec.Cmd) (<-chan sudo.Exit, error) {
			exited, err := s.procs.Spawn(cmd)
			if err != nil {
				return nil, err
			}
			out := make(chan sudo.Exit, 1)
			go func() {
				st := <-exited
				out <- sudo.Exit{Status: st.Status, Err: st.Err}
			}()
			return out, nil
		},
		Log: s.cfg.Log,
	})
	if err != nil {
		return fmt.Errorf("sudo: %w", err)
	}
	s.sudo = srv
	return nil
}

// NewServer builds envd's routes.
func NewServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{
		cfg:   cfg,
		env:   sandboxenv.New(cfg.DefaultUser),
		stats: hoststats.NewSampler("/"),
		mux:   http.NewServeMux(),
	}
	s.procs = process.New(s.env, cfg.Log, process.Options{Reap: cfg.Reap, StallTimeout: cfg.StallTimeout})
	procPath, procHandler := processconnect.NewProcessHandler(s.procs)
	s.fs = filesystem.New(s.env, cfg.Log)
	fsPath, fsHandler := filesystemconnect.NewFilesystemHandler(s.fs)
	s.mux.Handle(procPath, procHandler)
	s.mux.Handle(fsPath, fsHandler)
	s.mux.Handle("/files", files.New(s.env, cfg.Log))
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /envs", s.envs)
	s.mux.HandleFunc("POST /init", s.init)
	s.mux.HandleFunc("POST /freeze", s.freeze)
	s.mux.HandleFunc("POST /thaw", s.thaw)
	if cfg.HostSocket != "" {
		s.sock = &hostSocket{path: cfg.HostSocket, h: s, log: cfg.Log}
	}
	return s
}

// OpenHostSocket starts serving on Config.HostSocket; it does nothing without one.
func (s *Server) OpenHostSocket() error {
	if s.sock == nil {
		return nil
	}
	return s.sock.open()
}

// freeze prepares envd for a snapshot of its sandbox: it closes the host socket, which gVisor
// cannot checkpoint, and /thaw opens it again. Both come from the runtime driver with the
// agent's secret (see agentAuthorized); the proxies never forward them (internal routes).
// /freeze must come over TCP: over the host socket it would cut its own connection.
func (s *Server) freeze(w http.ResponseWriter, r *http.Request) {
	if !s.agentAuthorized(w, r) {
		return
	}
	if s.sock == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a.Network() == "unix" {
		writeError(w, http.StatusConflict, "POST /freeze closes the host socket it came over: send it to envd's TCP port")
		return
	}
	if err := s.sock.close(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// thaw serves the host socket again after a restore, or after a snapshot that failed.
func (s *Server) thaw(w http.ResponseWriter, r *http.Request) {
	if !s.agentAuthorized(w, r) {
		return
	}
	if err := s.OpenHostSocket(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Env exposes the state /init configures, for tests and embedding.
func (s *Server) Env() *sandboxenv.Env { return s.env }

// ServeHTTP applies CORS and access-token checks, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cors(w, r)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := s.authorize(r); err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	s.mux.ServeHTTP(w, r)
}

// tokenFree are the routes that need no access token: /health, and the internal routes,
// which take the agent's secret instead (agentAuthorized checks it in their handlers).
// /init is among them only once an agent secret is set: before that (a bare envd, or one a
// client other than Hearth's agent initialises), a token set by /init still guards it.
var tokenFree = map[string]bool{"/health": true, "/freeze": true, "/thaw": true}

// agentAuthorized checks the agent's secret on an internal route and answers 401 when it
// is wrong. The first /init after a boot sets the secret (see init); until then there is
// none to check: only the agent reaches envd from outside the sandbox before that /init,
// because no proxy routes to a sandbox that is still starting and no proxy forwards an
// internal route at all. A snapshot carries envd's memory, so a sandbox resumed from its own
// snapshot holds its own secret, and a fork child holds its parent's until its first /init
// (which presents the parent's and sets the child's). Template snapshots are taken before
// any /init, so sandboxes restored from one share no secret.
func (s *Server) hasAgentSecret() bool {
	s.agentMu.Lock()
	defer s.agentMu.Unlock()
	return s.agentSecret != ""
}

func (s *Server) agentAuthorized(w http.ResponseWriter, r *http.Request) bool {
	s.agentMu.Lock()
	msg := s.checkAgentLocked(r)
	s.agentMu.Unlock()
	if msg != "" {
		writeError(w, http.StatusUnauthorized, msg)
		return false
	}
	return true
}

// checkAgentLocked returns why r may not call an internal route, or "" when it may. It
// compares in constant time. s.agentMu is held.
func (s *Server) checkAgentLocked(r *http.Request) string {
	if s.agentSecret == "" {
		return ""
	}
	presented := r.Header.Get(auth.AgentHeader)
	switch {
	case presented == "":
		return "this route is internal to the host agent: missing " + auth.AgentHeader
	case !auth.TokenMatches(presented, s.agentSecret):
		return "this route is internal to the host agent: wrong " + auth.AgentHeader
	}
	return ""
}

// authorize enforces the access token set by /init on every route but tokenFree. File
// transfers may carry a signed URL instead.
func (s *Server) authorize(r *http.Request) error {
	token := s.env.AccessToken()
	if token == "" || tokenFree[r.URL.Path] || (r.URL.Path == "/init" && s.hasAgentSecret()) {
		return nil
	}
	if presented := r.Header.Get(auth.Header); presented != "" {
		if auth.TokenMatches(presented, token) {
			return nil
		}
		return errors.New("invalid access token in " + auth.Header)
	}
	if r.URL.Path == "/files" && (r.Method == http.MethodGet || r.Method == http.MethodPost) {
		_, err := auth.CheckFileRequest(r.Method, r.Header, r.URL.Query(), token, s.env.DefaultUser(), time.Now())
		return err // files.Handler checks again and acts only within the grant
	}
	return errors.New("missing access token: send it in the " + auth.Header + " header")
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	m, err := s.stats.Read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) envs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.env.Vars())
}

// InitRequest is the body of POST /init, as E2B's control plane sends it.
type InitRequest struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    *string           `json:"accessToken,omitempty"`
	Timestamp      *time.Time        `json:"timestamp,omitempty"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	// AgentSecret, Hearth's own, replaces the secret of envd's internal routes. The request
	// itself must present the current one in auth.AgentHeader once one is set.
	AgentSecret string `json:"hearthAgentSecret,omitempty"`
}

func (s *Server) init(w http.ResponseWriter, r *http.Request) {
	// Held until the new secret is in place, so that two /init cannot both pass the check
	// against the old one.
	s.agentMu.Lock()
	defer s.agentMu.Unlock()
	if msg := s.checkAgentLocked(r); msg != "" {
		writeError(w, http.StatusUnauthorized, msg)
		return
	}
	var req InitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) { // an empty body changes nothing
		writeError(w, http.StatusBadRequest, "invalid /init body: "+err.Error())
		return
	}
	if req.DefaultUser != "" {
		if _, err := identity.Lookup(req.DefaultUser); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("defaultUser: %v", err))
			return
		}
	}
	if req.DefaultWorkdir != "" && !filepath.IsAbs(req.DefaultWorkdir) {
		writeError(w, http.StatusBadRequest, "defaultWorkdir must be an absolute path")
		return
	}
	if req.AgentSecret != "" && len(req.AgentSecret) < auth.MinAgentSecret {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("hearthAgentSecret must have at least %d characters", auth.MinAgentSecret))
		return
	}
	if req.Timestamp != nil && s.cfg.SetClock {
		if err := setClock(*req.Timestamp); err != nil {
			s.cfg.Log.Warn("set clock from /init failed", "err", err)
		}
	}
	if req.AgentSecret != "" {
		s.agentSecret = req.AgentSecret
	}
	s.env.MergeVars(req.EnvVars)
	if req.AccessToken != nil {
		s.env.SetAccessToken(*req.AccessToken)
	}
	if req.DefaultUser != "" {
		s.env.SetDefaultUser(req.DefaultUser)
	}
	if req.DefaultWorkdir != "" {
		s.env.SetDefaultWorkdir(req.DefaultWorkdir)
	}
	w.WriteHeader(http.StatusNoContent)
}

func cors(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Expose-Headers", strings.Join([]string{
		"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Connect-Protocol-Version",
		"Content-Disposition", "Content-Encoding",
	}, ", "))
	h.Set("Access-Control-Max-Age", "7200")
}

// writeError writes E2B's error body shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NewHTTPServer wraps the handler in an http.Server that speaks HTTP/1.1 and unencrypted
// HTTP/2 (Connect client streams need HTTP/2), with no read or write timeouts because exec and
// watch streams last as long as their processes.
func NewHTTPServer(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       640 * time.Second,
	}
}
