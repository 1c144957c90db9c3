//go:build benchproxy

package cp

import (
	"net/http"

	"github.com/hearthsh/hearth/internal/proxy"
)

// EnableBenchSharedProxy returns a second sandbox proxy, for the benchmark's A/B only
// (hearth dev --bench-shared-proxy-listen, built with the benchproxy tag): its traffic to the
// agents shares the HTTP/2 RPC transport instead of the dedicated HTTP/1.1 one, so bench/ can
// measure what the separation buys. The agents must serve proxy traffic on their RPC
// listener. Call it once, before the server handles traffic.
func (s *Server) EnableBenchSharedProxy() http.Handler {
	s.sharedProxy = proxy.New(s.resolveShared, proxy.Options{Domain: s.cfg.Domain, StatusFor: proxyStatus, Log: s.log})
	return s.sharedProxy
}

// resolveShared is resolveProxy for the benchmark's shared-transport listener: the request
// goes to the agent's RPC address over the control plane's HTTP/2 RPC transport, multiplexed
// on the connection the RPCs use. Upgrades (WebSockets) keep the HTTP/1.1 path: HTTP/2
// carries no Upgrade, and the agent proxy speaks no extended CONNECT.
func (s *Server) resolveShared(r *http.Request, route proxy.Route) (proxy.Upstream, error) {
	c, err := s.resolveRoute(r, route)
	if err != nil {
		return proxy.Upstream{}, err
	}
	if r.Header.Get("Upgrade") != "" {
		return s.upstream(c.sb, c.addr, route), nil
	}
	up := s.upstream(c.sb, c.rpc, route)
	up.Socket, up.Transport = "", s.agents.h2
	return up, nil
}
