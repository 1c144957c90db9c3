package cp

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
)

// trafficTokenHeader carries a secure sandbox's traffic token to its non-envd ports.
const trafficTokenHeader = "E2b-Traffic-Access-Token"

// autoResumeTimeout is the lifetime a sandbox gets when traffic wakes it up.
const autoResumeTimeout = 5 * time.Minute

type resumeCall struct {
	done chan struct{}
	sb   store.Sandbox
	err  error
}

// resumeOnce resumes a paused sandbox; concurrent callers for one sandbox share one resume.
func (s *Server) resumeOnce(ctx context.Context, id string, ttl time.Duration) (store.Sandbox, error) {
	s.resumeMu.Lock()
	if c, ok := s.resuming[id]; ok {
		s.resumeMu.Unlock()
		select {
		case <-c.done:
			return c.sb, c.err
		case <-ctx.Done():
			return store.Sandbox{}, ctx.Err()
		}
	}
	c := &resumeCall{done: make(chan struct{})}
	s.resuming[id] = c
	s.resumeMu.Unlock()

	c.sb, c.err = s.resume(context.WithoutCancel(ctx), id, ttl, nil)
	s.resumeMu.Lock()
	delete(s.resuming, id)
	s.resumeMu.Unlock()
	close(c.done)
	return c.sb, c.err
}

// routeTTL is how long a running sandbox's route is reused without asking the store. Every
// request would otherwise cost two queries; a pause or kill on this replica drops the entry
// at once, and one on another replica is refused by the agent (409) until the entry expires.
const routeTTL = 2 * time.Second

// routeRefreshAfter is the age from which a route still served from the cache is also looked
// up again, once, in the background (refreshRoute). A route in use then never expires: without
// it, every routeTTL each request in flight for the sandbox (a keystroke among a page's polls
// and downloads) waited for the two queries again, together.
const routeRefreshAfter = routeTTL / 2

type cachedRoute struct {
	sb   store.Sandbox
	addr string
	rpc  string // the agent's RPC address, for the benchmark's shared-transport arm
	at   time.Time
}

// routes caches recent routes by sandbox ID.
type routes struct {
	mu         sync.Mutex
	m          map[string]cachedRoute
	refreshing map[string]bool
	// epoch counts drops: a lookup that began before one may have read the state the drop
	// replaced, so its answer is not cached (putIf).
	epoch uint64
}

func (c *routes) get(id string) (cachedRoute, bool) {
	r, ok, _, _ := c.lookup(id)
	return r, ok
}

// lookup is get that also says whether the caller should refresh the route in the background
// (it is old enough and no refresh is under way; the caller then owns one and ends it with
// refreshed), and the epoch to refresh it under.
func (c *routes) lookup(id string) (r cachedRoute, ok, refresh bool, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok = c.m[id]
	age := time.Since(r.at)
	if !ok || age > routeTTL {
		return cachedRoute{}, false, false, c.epoch
	}
	if age > routeRefreshAfter && !c.refreshing[id] {
		if c.refreshing == nil {
			c.refreshing = map[string]bool{}
		}
		c.refreshing[id] = true
		refresh = true
	}
	return r, true, refresh, c.epoch
}

func (c *routes) refreshed(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.refreshing, id)
}

func (c *routes) put(r cachedRoute) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(r)
}

// putIf caches r unless a route was dropped since epoch.
func (c *routes) putIf(r cachedRoute, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch == epoch {
		c.putLocked(r)
	}
}

func (c *routes) putLocked(r cachedRoute) {
	if len(c.m) > 100000 {
		clear(c.m)
	}
	c.m[r.sb.ID] = r
}

func (c *routes) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
	c.epoch++
}

// forgetRoute drops everything the proxies keep for a sandbox whose state changed.
func (s *Server) forgetRoute(id string) {
	s.routes.drop(id)
	s.proxy.Evict(id)
	if s.sharedProxy != nil {
		s.sharedProxy.Evict(id)
	}
}

// resolveProxy finds the agent proxy for a sandbox port, resuming the sandbox first when it
// is paused and allows auto-resume.
func (s *Server) resolveProxy(r *http.Request, route proxy.Route) (proxy.Upstream, error) {
	c, err := s.resolveRoute(r, route)
	if err != nil {
		return proxy.Upstream{}, err
	}
	up := s.upstream(c.sb, c.addr, route)
	if lp := s.cfg.LocalProxies[c.sb.HostID]; lp != nil {
		// The agent is in this process: hand it the request (nil until it has started,
		// and then the socket serves).
		up.Next = lp.Handler()
	}
	return up, nil
}

// resolveRoute finds the running sandbox and its host's addresses for a proxied request.
func (s *Server) resolveRoute(r *http.Request, route proxy.Route) (cachedRoute, error) {
	c, ok, refresh, epoch := s.routes.lookup(route.SandboxID)
	if refresh {
		go s.refreshRoute(route.SandboxID, epoch)
	}
	if ok {
		if err := checkTraffic(r, c.sb, route); err != nil {
			return cachedRoute{}, err
		}
		return c, nil
	}
	ctx := r.Context()
	sb, err := s.store.Sandbox(ctx, route.SandboxID)
	if errors.Is(err, store.ErrNotFound) {
		// Killed and expired sandboxes leave no record: the same answer as for an unknown ID.
		return cachedRoute{}, &proxy.NotFoundError{SandboxID: route.SandboxID,
			Detail: "sandbox " + route.SandboxID + " is not running: no such sandbox, or it was killed or its timeout ran out"}
	}
	if err != nil {
		return cachedRoute{}, err
	}
	if err := checkTraffic(r, sb, route); err != nil {
		return cachedRoute{}, err
	}
	switch sb.State {
	case store.StateRunning:
	case store.StatePaused:
		if sb.PausedFilesystemOnly {
			return cachedRoute{}, &proxy.NotFoundError{SandboxID: sb.ID,
				Detail: "sandbox " + sb.ID + " is paused keeping only its filesystem, which traffic never resumes: resume it with Sandbox.connect or `hearth sandbox resume`"}
		}
		if !sb.AutoResume {
			return cachedRoute{}, &proxy.NotFoundError{SandboxID: sb.ID,
				Detail: "sandbox " + sb.ID + " is paused and does not resume on traffic: resume it with Sandbox.connect or `hearth sandbox resume`"}
		}
		if sb, err = s.resumeOnce(ctx, sb.ID, autoResumeTimeout); err != nil {
			if statusOf(err) == http.StatusNotFound { // killed meanwhile
				return cachedRoute{}, &proxy.NotFoundError{SandboxID: route.SandboxID, Detail: err.Error()}
			}
			return cachedRoute{}, err
		}
	case store.StateStopping:
		// As on E2B, a sandbox being killed is no longer routed: the SDKs probe /health
		// right after a kill cuts their streams and need the 502 to say "killed".
		return cachedRoute{}, &proxy.NotFoundError{SandboxID: sb.ID, Detail: "sandbox " + sb.ID + " is being killed"}
	case store.StateLost:
		// Not routable, and not coming back on traffic: as for a gone sandbox, E2B's 502, so
		// the SDKs' isRunning() says false.
		return cachedRoute{}, &proxy.NotFoundError{SandboxID: sb.ID, Detail: lostErr(sb, "reach").Error()}
	default:
		// starting, pausing, resuming: it will be running or paused in a moment (E2B's proxy
		// answers 409 "still transitioning" too).
		return cachedRoute{}, busy(sb.ID, sb.State, "connect to")
	}
	host, err := s.store.Host(ctx, sb.HostID)
	if err != nil {
		return cachedRoute{}, err
	}
	if host.State != store.HostReady {
		return cachedRoute{}, errorf(http.StatusServiceUnavailable, "host %s of sandbox %s is down", host.ID, sb.ID)
	}
	c = cachedRoute{sb: sb, addr: host.ProxyAddr, rpc: host.RPCAddr, at: time.Now()}
	s.routes.putIf(c, epoch)
	return c, nil
}

// refreshRoute looks a cached route up again while it is still served: a sandbox still
// running on a ready host gets a fresh entry; one that is not any more is forgotten, so the
// next request takes the full path and gets its answer (resume, 502, 409). A failed lookup
// leaves the entry to expire.
func (s *Server) refreshRoute(id string, epoch uint64) {
	defer s.routes.refreshed(id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sb, err := s.store.Sandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && sb.State != store.StateRunning) {
		s.forgetRoute(id)
		return
	}
	if err != nil {
		return
	}
	host, err := s.store.Host(ctx, sb.HostID)
	if err != nil {
		return
	}
	if host.State != store.HostReady {
		s.forgetRoute(id)
		return
	}
	s.routes.putIf(cachedRoute{sb: sb, addr: host.ProxyAddr, rpc: host.RPCAddr, at: time.Now()}, epoch)
}

// checkTraffic enforces the traffic token on the non-envd ports of a sandbox created with
// network.allowPublicTraffic false (envd has its own access token).
func checkTraffic(r *http.Request, sb store.Sandbox, route proxy.Route) error {
	if sb.AllowPublicTraffic || route.Port == proxy.EnvdPort {
		return nil
	}
	got := r.Header.Get(trafficTokenHeader)
	if sb.TrafficAccessToken == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sb.TrafficAccessToken)) != 1 {
		return errorf(http.StatusForbidden, "sandbox %s is not public: send its traffic access token in the %s header", sb.ID, trafficTokenHeader)
	}
	return nil
}

// upstream sends a request to the sandbox's agent proxy, routed by headers and carrying
// the agent token (which replaces any copy a client sent).
func (s *Server) upstream(sb store.Sandbox, agentProxy string, route proxy.Route) proxy.Upstream {
	h := http.Header{}
	h.Set(hostreg.ProxyAuthHeader, s.cfg.AgentToken)
	h.Set(proxy.HeaderSandboxID, sb.ID)
	h.Set(proxy.HeaderSandboxPort, itoa(route.Port))
	return proxy.Upstream{Addr: agentProxy, Socket: s.cfg.LocalProxySockets[sb.HostID], Header: h}
}

func itoa(p uint16) string {
	b := [5]byte{}
	i := len(b)
	for {
		i--
		b[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			return string(b[i:])
		}
	}
}

// proxyStatus maps a resolve error to the status the proxy answers with.
func proxyStatus(err error) int {
	switch {
	case errors.Is(err, context.Canceled):
		return 499
	case proxy.IsNotFound(err):
		return proxy.NotFoundStatus
	}
	return statusOf(err)
}
