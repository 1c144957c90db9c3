package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/postgres"
	"github.com/hearthsh/hearth/internal/store/sqlite"
)

// serverConfig is what `hearth server` (and `hearth dev`) needs to run a control plane.
type serverConfig struct {
	DataDir        string
	DatabaseURL    string
	APIAddr        string
	ProxyAddr      string
	Domain         string
	AgentToken     string
	APIKey         string
	DefaultTimeout time.Duration
	HostDeadAfter  time.Duration
	// MemoryOvercommit: see cp.Config.
	MemoryOvercommit float64
	// LocalProxySockets: see cp.Config (hearth dev).
	LocalProxySockets map[string]string
	// LocalProxies: see cp.Config (hearth dev).
	LocalProxies map[string]*proxy.InProcess
	TLS          proxyTLSConfig
	// BenchSharedProxyAddr, when set (hearth dev --bench-shared-proxy-listen, only in a
	// binary built with the benchproxy tag), serves a second sandbox proxy whose agent
	// traffic shares the HTTP/2 RPC transport; for the benchmark's A/B only.
	BenchSharedProxyAddr string
}

func init() {
	var (
		c         serverConfig
		pprofAddr string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: the E2B-compatible REST API and the sandbox proxy",
		Long: "Runs the control plane. Agents (`hearth agent --control-plane URL`) register with it. " +
			"State lives in SQLite under --data-dir, or in PostgreSQL with --database-url (replicas " +
			"may share one database).",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			if err := startPprof(ctx, pprofAddr, log); err != nil {
				return err
			}
			if c.AgentToken == "" {
				return errors.New("--agent-token (or $HEARTH_AGENT_TOKEN) is required: a secret shared with the agents, " +
					"which authenticates their heartbeats and the control plane's calls to them (e.g. `openssl rand -hex 32`)")
			}
			st, err := openStore(ctx, c)
			if err != nil {
				return err
			}
			defer st.Close()
			if c.APIKey != "" {
				if err := cp.RegisterKey(ctx, st, c.APIKey, "--api-key", store.DefaultTeam); err != nil {
					return err
				}
			}
			return runControlPlane(ctx, c, st, log, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "data directory (SQLite database)")
	f.StringVar(&c.DatabaseURL, "database-url", os.Getenv("HEARTH_DATABASE_URL"), "PostgreSQL URL; default SQLite in the data dir ($HEARTH_DATABASE_URL)")
	f.StringVar(&c.APIAddr, "listen", ":3000", "address of the REST API")
	f.StringVar(&c.ProxyAddr, "proxy-listen", ":3002", "address of the sandbox proxy")
	f.StringVar(&c.Domain, "domain", "", "sandbox domain: host routing PORT-ID.<domain> and the domain SDKs are told; "+
		"add the public port when it is not 443 (sandbox.example.com:8443): the SDKs build https://PORT-ID.<domain> from it")
	c.TLS.flags(f, false)
	f.StringVar(&c.AgentToken, "agent-token", os.Getenv("HEARTH_AGENT_TOKEN"), "secret shared with the agents, required: authenticates their heartbeats and the control plane's calls to them ($HEARTH_AGENT_TOKEN)")
	f.StringVar(&c.APIKey, "api-key", os.Getenv("HEARTH_API_KEY"), "an API key to accept (e2b_ followed by hex), added to the store")
	f.DurationVar(&c.DefaultTimeout, "default-timeout", 15*time.Second, "sandbox lifetime when a create names none (E2B's API default)")
	memoryOvercommitFlag(f, &c.MemoryOvercommit)
	pprofFlag(f, &pprofAddr)
	f.DurationVar(&c.HostDeadAfter, "host-dead-after", 30*time.Second, "mark an agent down, and its running sandboxes lost, after this long without a heartbeat (agents send one every 5 s)")
	rootCmd.AddCommand(cmd)
}

func openStore(ctx context.Context, c serverConfig) (store.Store, error) {
	// Return a nil interface on error, not an interface holding a nil *Store.
	if c.DatabaseURL != "" {
		st, err := postgres.Open(ctx, c.DatabaseURL)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(c.DataDir, "hearth.db"))
	if err != nil {
		return nil, err
	}
	return st, nil
}

// memoryOvercommitFlag defines --memory-overcommit (server and dev).
func memoryOvercommitFlag(f *pflag.FlagSet, v *float64) {
	f.Float64Var(v, "memory-overcommit", 2, "place sandboxes on a host until their memory limits add up to this multiple of its memory "+
		"(limits are caps, not reservations: an idle sandbox uses far less); 0: the default")
}

// runControlPlane serves the API and the proxy until ctx ends.
func runControlPlane(ctx context.Context, c serverConfig, st store.Store, log *slog.Logger, ready func(api, proxy net.Addr, domain string, tls *proxyTLS)) error {
	if c.MemoryOvercommit < 0 || math.IsNaN(c.MemoryOvercommit) || math.IsInf(c.MemoryOvercommit, 0) {
		return fmt.Errorf("--memory-overcommit %g: want a multiple above 0 (e.g. 2), or 0 for the default", c.MemoryOvercommit)
	}
	ptls, err := setupProxyTLS(c.TLS, c.DataDir, c.Domain)
	if err != nil {
		return fmt.Errorf("proxy TLS: %w", err)
	}
	apiLn, proxyLn, err := listenBoth(c.APIAddr, c.ProxyAddr)
	if err != nil {
		return err
	}
	domain := sdkDomain(c.Domain, c.TLS.AddPort, proxyLn.Addr())
	proxyAddr := proxyLn.Addr()
	if ptls != nil {
		proxyLn = proxy.ServeTLSAndPlain(proxyLn, ptls.config, 10*time.Second)
	}
	srv := cp.New(cp.Config{Store: st, Log: log, Domain: domain, AgentToken: c.AgentToken, DefaultTimeout: c.DefaultTimeout,
		HostDeadAfter: c.HostDeadAfter, ProxyPort: tcpPort(proxyAddr), LocalProxySockets: c.LocalProxySockets, LocalProxies: c.LocalProxies, BuildFilesDir: filepath.Join(c.DataDir, "build-files"),
		MemoryOvercommit: c.MemoryOvercommit})
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	srv.Reconcile(rctx)
	cancel()
	go srv.Run(ctx)

	apiSrv := newServer(srv.APIHandler(), false)
	proxySrv := newServer(srv.ProxyHandler(), false)
	srvs, lns := []*http.Server{apiSrv, proxySrv}, []net.Listener{apiLn, proxyLn}
	if bsrv, ln, err := benchSharedProxy(c, srv, log); err != nil {
		apiLn.Close()
		proxyLn.Close()
		return err
	} else if bsrv != nil {
		srvs, lns = append(srvs, bsrv), append(lns, ln)
	}
	log.Info("control plane ready", "api", apiLn.Addr().String(), "proxy", proxyAddr.String(), "domain", domain, "tls", ptls != nil)
	if ready != nil {
		ready(apiLn.Addr(), proxyAddr, domain, ptls)
	}
	return serveUntil(ctx, srvs, lns)
}

// tcpPort is the port of a TCP listener's address, 0 for any other.
func tcpPort(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}
