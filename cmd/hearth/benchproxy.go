//go:build benchproxy

package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/proxy"
)

// This file is the benchmark's shared-transport arm (docs/benchmarks.md, pty): built only
// with `-tags benchproxy` (scripts/bench.sh builds bin/hearth-bench-dev so), never in the
// shipped binary. benchproxy_off.go holds the shipped binary's versions.

// benchProxyFlags defines hearth dev's --bench-shared-proxy-listen.
func benchProxyFlags(f *pflag.FlagSet, c *serverConfig) {
	f.StringVar(&c.BenchSharedProxyAddr, "bench-shared-proxy-listen", "", "benchmark only (off when empty): address of a second sandbox proxy whose traffic to the agent "+
		"shares the HTTP/2 RPC connection instead of the dedicated HTTP/1.1 transport (WebSockets stay on HTTP/1.1); see docs/benchmarks.md")
}

// benchSharedProxy listens on c.BenchSharedProxyAddr, when set, for the shared-transport proxy.
func benchSharedProxy(c serverConfig, srv *cp.Server, log *slog.Logger) (*http.Server, net.Listener, error) {
	if c.BenchSharedProxyAddr == "" {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", c.BenchSharedProxyAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("bench shared-transport proxy: %w", err)
	}
	log.Warn("benchmark switch on: a second sandbox proxy shares the agents' HTTP/2 RPC transport", "listen", ln.Addr().String())
	return newServer(srv.EnableBenchSharedProxy(), false), ln, nil
}

// benchProxyOnRPC makes the agent's RPC listener also serve proxy traffic (requests that
// carry the sandbox routing header) when on.
func benchProxyOnRPC(on bool, rpc, proxyHandler http.Handler) http.Handler {
	if !on {
		return rpc
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(proxy.HeaderSandboxID) != "" {
			proxyHandler.ServeHTTP(w, r)
			return
		}
		rpc.ServeHTTP(w, r)
	})
}
