// Package cp is Hearth's control plane: the E2B-compatible REST API, API key auth,
// placement of sandboxes on host agents, lifecycle timers (timeouts, auto-pause), and the
// public sandbox proxy with auto-resume.
package cp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/web"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// Config configures a control plane.
type Config struct {
	Store store.Store
	Log   *slog.Logger
	// Domain is the sandbox domain for host routing ("PORT-ID.<Domain>"), returned to SDKs as
	// the sandbox domain; empty means host routing accepts any domain and none is returned.
	// It may end in a port ("hearth.localhost:3002"): the SDKs build https://PORT-ID.<Domain>
	// from it, and routing ignores it.
	Domain string
	// ProxyPort is the public sandbox proxy's port, for the dashboard's path-form preview links.
	ProxyPort int
	// AgentToken is the secret shared with the agents: their heartbeats carry it, and so do
	// the control plane's calls to them. Empty refuses every agent.
	AgentToken string
	// DefaultTimeout and MaxTimeout bound sandbox lifetimes.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// HostDeadAfter marks an agent down when it has not sent a heartbeat for this long.
	HostDeadAfter time.Duration
	// MemoryOvercommit lets the sum of running sandboxes' memory limits on a host reach this
	// multiple of its memory.
	MemoryOvercommit float64
	// DefaultCPUs and DefaultMemoryMiB size sandboxes whose template says nothing.
	DefaultCPUs      int
	DefaultMemoryMiB int
	// CreateTimeout bounds one create, pause or resume on an agent.
	CreateTimeout time.Duration
	// LocalProxySockets maps the IDs of hosts whose agent runs on this machine (hearth dev) to
	// a Unix socket its proxy also serves on. Sandbox traffic to them skips a loopback TCP
	// hop (less CPU per proxied byte); the proxy falls back to the agent's address when the
	// socket is absent.
	LocalProxySockets map[string]string
	// LocalProxies maps the IDs of hosts whose agent runs in this very process (hearth dev)
	// to its proxy handler: sandbox traffic is handed to it in memory (proxy.Upstream.Next)
	// instead of over LocalProxySockets or the network, once the agent has set it.
	LocalProxies map[string]*proxy.InProcess
	// BuildFilesDir keeps the archives uploaded for API template builds (COPY steps); empty
	// means a directory under the system's temp dir.
	BuildFilesDir string
}

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 15 * time.Second
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = 24 * time.Hour
	}
	if c.HostDeadAfter == 0 {
		c.HostDeadAfter = 30 * time.Second
	}
	if c.MemoryOvercommit == 0 {
		c.MemoryOvercommit = 2
	}
	if c.DefaultCPUs == 0 {
		c.DefaultCPUs = 2
	}
	if c.DefaultMemoryMiB == 0 {
		c.DefaultMemoryMiB = 512
	}
	if c.CreateTimeout == 0 {
		c.CreateTimeout = 2 * time.Minute
	}
}

// Server is the control plane.
type Server struct {
	cfg    Config
	store  store.Store
	log    *slog.Logger
	agents *agentPool
	proxy  *proxy.Handler
	// sharedProxy is the benchmark's shared-transport proxy (benchshared.go, built only
	// with the benchproxy tag); nil otherwise.
	sharedProxy *proxy.Handler
	keys        *keyCache
	// failures rate-limits invalid API keys per source address.
	failures *failLimiter
	events   *eventLog
	routes   *routes

	// resuming deduplicates concurrent auto-resumes of one sandbox.
	resumeMu sync.Mutex
	resuming map[string]*resumeCall

	// counts are this replica's actions, served on GET /metrics.
	counts counters

	// inflight are the sandboxes this replica placed on each host lately (see pending).
	pendMu   sync.Mutex
	inflight map[string][]placement

	// uploadKey signs the upload URLs of API template builds.
	uploadKey string

	// gcKick starts a template garbage collection pass (gcLoop); gcGrace and gcRetryAfter
	// are gcGrace and gcRetryAfter but for tests. gcRetrying holds the host/version pairs
	// whose late deletion (dropDeletedCopy) is under way.
	gcKick       chan struct{}
	gcGrace      time.Duration
	gcRetryAfter time.Duration
	gcRetrying   sync.Map
}

// New returns a control plane over a store.
func New(cfg Config) *Server {
	cfg.defaults()
	s := &Server{
		cfg:      cfg,
		store:    cfg.Store,
		log:      cfg.Log,
		agents:   newAgentPool(cfg.AgentToken),
		keys:     newKeyCache(cfg.Store),
		failures: newFailLimiter(),
		events:   newEventLog(),
		routes:   &routes{m: map[string]cachedRoute{}},
		resuming: map[string]*resumeCall{},
		inflight: map[string][]placement{},
		gcKick:   make(chan struct{}, 1),
		gcGrace:  gcGrace,

		gcRetryAfter: gcRetryAfter,
	}
	s.uploadKey = cfg.AgentToken
	if s.uploadKey == "" {
		s.uploadKey = randomToken()
	}
	if s.cfg.BuildFilesDir == "" {
		s.cfg.BuildFilesDir = filepath.Join(os.TempDir(), "hearth-build-files")
	}
	s.proxy = proxy.New(s.resolveProxy, proxy.Options{Domain: cfg.Domain, StatusFor: proxyStatus, Log: cfg.Log,
		Unrouted: newSignedRouter(cfg.Store, cfg.Log).route})
	return s
}

// APIHandler serves the REST API.
func (s *Server) APIHandler() http.Handler {
	mux := http.NewServeMux()
	auth := s.requireKey
	// own is for routes that name a sandbox: the caller's team must own it.
	own := func(h http.HandlerFunc) http.Handler { return s.requireKey(s.ownSandbox(h)) }
	for _, p := range []string{"POST /sandboxes", "POST /v2/sandboxes"} {
		mux.Handle(p, auth(s.createSandbox))
	}
	mux.Handle("GET /sandboxes", auth(s.listRunning))
	mux.Handle("GET /v2/sandboxes", auth(s.listSandboxes))
	mux.Handle("GET /sandboxes/{id}", own(s.getSandbox))
	mux.Handle("DELETE /sandboxes/{id}", own(s.killSandbox))
	mux.Handle("POST /sandboxes/{id}/timeout", own(s.setTimeout))
	mux.Handle("POST /sandboxes/{id}/refreshes", own(s.refresh))
	mux.Handle("POST /sandboxes/{id}/pause", own(s.pauseSandbox))
	mux.Handle("POST /sandboxes/{id}/resume", own(s.resumeSandbox))
	for _, p := range []string{"POST /sandboxes/{id}/connect", "POST /v2/sandboxes/{id}/connect"} {
		mux.Handle(p, own(s.connectSandbox))
	}
	mux.Handle("PUT /sandboxes/{id}/network", own(s.updateNetwork))
	mux.Handle("POST /sandboxes/{id}/fork", own(s.forkSandbox))
	mux.Handle("GET /sandboxes/{id}/metrics", own(s.sandboxMetrics))
	for _, p := range []string{"GET /sandboxes/{id}/logs", "GET /v2/sandboxes/{id}/logs"} {
		mux.Handle(p, own(s.sandboxLogs))
	}
	mux.Handle("GET /api-keys", auth(s.listKeys))
	mux.Handle("POST /api-keys", auth(s.createKey))
	mux.Handle("DELETE /api-keys/{id}", auth(s.revokeKey))
	mux.Handle("GET /templates", auth(s.listTemplates))
	mux.Handle("GET /templates/{id}", auth(s.getTemplate))
	mux.Handle("POST /sandboxes/{id}/snapshots", own(s.createSnapshot))
	mux.Handle("GET /snapshots", auth(s.listSnapshots))
	mux.Handle("DELETE /templates/{id}", auth(s.deleteTemplate))
	mux.Handle("POST /v3/templates", auth(s.requestTemplateBuild))
	mux.Handle("GET /templates/{templateID}/files/{hash}", auth(s.templateFile))
	mux.Handle("POST /v2/templates/{templateID}/builds/{buildID}", auth(s.startTemplateBuild))
	mux.Handle("GET /templates/{templateID}/builds/{buildID}/status", auth(s.templateBuildStatus))
	mux.Handle("GET /metrics", auth(s.serveMetrics))
	// GET /templates/aliases/{alias} and GET /templates/{templateID}/tags overlap (the
	// mux refuses both), so one pattern serves the two.
	mux.Handle("GET /templates/{templateID}/{sub}", auth(s.templateSub))
	mux.Handle("POST /templates/tags", auth(s.assignTemplateTags))
	mux.Handle("DELETE /templates/tags", auth(s.deleteTemplateTags))
	mux.HandleFunc("POST /hearth/v1/hosts/{id}/heartbeat", s.heartbeat)
	mux.Handle("GET /hearth/v1/hosts", auth(s.listHosts))
	mux.Handle("POST /hearth/v1/hosts/{id}/drain", auth(s.drainHost))
	mux.Handle("POST /hearth/v1/hosts/{id}/undrain", auth(s.undrainHost))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	// Build archives are large: their route is outside limitBodies (it caps its own body).
	uploads := http.NewServeMux()
	uploads.HandleFunc("PUT /hearth/v1/uploads/{templateID}/{hash}", s.uploadFile)
	limited := limitBodies(mux)
	api := cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/hearth/v1/uploads/") {
			uploads.ServeHTTP(w, r)
			return
		}
		limited.ServeHTTP(w, r)
	}))
	// The dashboard calls api in-process with the signed-in key, so the team checks above
	// apply to it unchanged; it caps its own bodies (uploads are larger than REST bodies).
	root := http.NewServeMux()
	root.Handle(web.Prefix, web.New(web.Config{API: api, Proxy: s.proxy, Log: s.log,
		Previews: web.Previews{Domain: s.cfg.Domain, ProxyPort: s.cfg.ProxyPort}}))
	root.Handle("/", api)
	return root
}

// ProxyHandler serves sandbox traffic.
func (s *Server) ProxyHandler() http.Handler { return s.proxy }

// Run drives the lifecycle loops (timeouts, host liveness) until ctx ends. Call Reconcile
// first.
func (s *Server) Run(ctx context.Context) {
	go s.gcLoop(ctx)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expire(ctx)
			s.checkHosts(ctx)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, api.Error{Code: status, Message: msg})
}

// maxRequestBody caps every REST request body.
const maxRequestBody = 1 << 20

// limitBodies caps request bodies; reading past the cap fails with *http.MaxBytesError,
// which decode turns into a 413.
func limitBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		}
		h.ServeHTTP(w, r)
	})
}

// decode reads a JSON body; an empty body leaves v as it is. Its errors carry their status
// (400, or 413 for a body over maxRequestBody) for fail.
func decode(r *http.Request, v any) error {
	if r.Body == nil {
		return nil
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxRequestBody))
	if err := dec.Decode(v); err != nil && !errors.Is(err, errEOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errorf(http.StatusRequestEntityTooLarge, "request body over %d bytes", tooBig.Limit)
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	return nil
}

func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				w.Header().Set("Access-Control-Allow-Headers", req)
			}
			w.Header().Set("Access-Control-Expose-Headers", strings.Join([]string{"X-Next-Token", "X-Total-Running"}, ", "))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}
