package cp

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

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

// resolveProxy finds the agent proxy for a sandbox port, resuming the sandbox first when it
// is paused and allows auto-resume.
func (s *Server) resolveProxy(r *http.Request, route proxy.Route) (proxy.Upstream, error) {
	ctx := r.Context()
	sb, err := s.store.Sandbox(ctx, route.SandboxID)
	if err != nil {
		return proxy.Upstream{}, sandboxErr(route.SandboxID, err)
	}
	if sb.Secure && route.Port != proxy.EnvdPort {
		got := r.Header.Get(trafficTokenHeader)
		if subtle.ConstantTimeCompare([]byte(got), []byte(sb.TrafficAccessToken)) != 1 {
			return proxy.Upstream{}, errorf(http.StatusForbidden, "sandbox %s is secure: send its traffic access token in the %s header", sb.ID, trafficTokenHeader)
		}
	}
	switch sb.State {
	case store.StateRunning:
	case store.StatePaused:
		if !sb.AutoResume {
			return proxy.Upstream{}, errorf(http.StatusConflict, "sandbox %s is paused and does not resume on traffic: resume it with Sandbox.connect or `hearth sandbox resume`", sb.ID)
		}
		if sb, err = s.resumeOnce(ctx, sb.ID, autoResumeTimeout); err != nil {
			return proxy.Upstream{}, err
		}
	default:
		return proxy.Upstream{}, busy(sb.ID, sb.State, "connect to")
	}
	host, err := s.store.Host(ctx, sb.HostID)
	if err != nil {
		return proxy.Upstream{}, err
	}
	if host.State != store.HostReady {
		return proxy.Upstream{}, errorf(http.StatusServiceUnavailable, "host %s of sandbox %s is down", host.ID, sb.ID)
	}
	h := http.Header{}
	h.Set(proxy.HeaderSandboxID, sb.ID)
	h.Set(proxy.HeaderSandboxPort, itoa(route.Port))
	return proxy.Upstream{Addr: host.ProxyAddr, Header: h}, nil
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

func proxyStatus(err error) int {
	if errors.Is(err, context.Canceled) {
		return 499
	}
	return statusOf(err)
}
