package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
)

func init() {
	var (
		c         serverConfig
		a         agentConfig
		envdPath  string
		verbose   bool
		pprofAddr string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the control plane and one host agent in one process, for a laptop or one Linux box",
		Long: "Runs everything on this machine: SQLite in --data-dir, one agent with the default " +
			"runtime, the REST API and the sandbox proxy on loopback. Builds the base template on " +
			"first start (debootstrap, about a minute) and prints the API key and the variables " +
			"that point the E2B SDKs here. The key is saved in DATA-DIR/api-key and reused; " +
			"--api-key fixes it for scripts.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if err := startPprof(ctx, pprofAddr, log); err != nil {
				return err
			}
			return runDev(ctx, c, a, envdPath, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "data directory: database, templates, sandboxes, API key")
	f.StringVar(&c.APIAddr, "listen", "127.0.0.1:3000", "address of the REST API")
	f.StringVar(&c.ProxyAddr, "proxy-listen", "127.0.0.1:3002", "address of the sandbox proxy")
	f.StringVar(&c.APIKey, "api-key", os.Getenv("HEARTH_API_KEY"), "API key to use instead of the saved or generated one (e2b_ followed by hex)")
	f.StringVar(&c.Domain, "domain", "hearth.localhost", "sandbox domain for host routing (PORT-ID.<domain>), told to the SDKs with the proxy's port "+
		"(browsers resolve *.localhost to loopback); empty accepts any and tells none")
	c.TLS.flags(f, true)
	c.TLS.AddPort = true
	f.StringVar(&c.AgentToken, "agent-token", os.Getenv("HEARTH_AGENT_TOKEN"), "secret between the control plane and the agent (default: a new random one each start; set it to call the agent's API yourself)")
	f.StringVar(&c.DatabaseURL, "database-url", os.Getenv("HEARTH_DATABASE_URL"), "PostgreSQL URL instead of SQLite")
	f.DurationVar(&c.DefaultTimeout, "default-timeout", 15*time.Second, "sandbox lifetime when a create names none")
	memoryOvercommitFlag(f, &c.MemoryOvercommit)
	f.StringVar(&a.RPCAddr, "agent-listen", "127.0.0.1:5008", "address of the agent's API")
	f.StringVar(&a.ProxyAddr, "agent-proxy-listen", "127.0.0.1:5007", "address of the agent's sandbox proxy")
	f.StringVar(&a.Runtime, "runtime", "gvisor", "sandbox runtime")
	f.StringVar(&a.Runsc, "runsc", "", "runsc binary (default: bin/runsc next to hearth, else PATH)")
	f.StringVar(&a.PoolCIDR, "pool", netslot.DefaultCIDR.String(), "IPv4 pool for sandbox network slots")
	f.StringVar(&a.SlotPrefix, "slot-prefix", netslot.DefaultPrefix, "name prefix of the agent's network objects")
	diskFlag(f, &a.DefaultDiskMiB)
	maxSandboxesFlag(f, &a.MaxSandboxes)
	a.warmPoolFlags(f)
	imageCacheFlag(f, &a.ImageCacheMiB)
	a.egressFlags(f)
	benchProxyFlags(f, &c)
	f.StringVar(&envdPath, "envd", "", "envd binary to inject into templates (default: envd next to hearth)")
	f.BoolVar(&verbose, "verbose", false, "log debug messages")
	pprofFlag(f, &pprofAddr)
	rootCmd.AddCommand(cmd)
}

func runDev(ctx context.Context, c serverConfig, a agentConfig, envdPath string, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("hearth dev must run as root: it creates network namespaces and sandboxes")
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return err
	}
	if envdPath == "" {
		envdPath = templateDefaultEnvdPath()
	}
	// Build (first time) or refresh envd in the base template before anything listens.
	bctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	if _, err := template.Open(c.DataDir, "base"); errors.Is(err, template.ErrNotBuilt) {
		log.Info("building the base template (debootstrap, about a minute, once)")
	}
	_, err := template.Build(bctx, template.BuildOptions{DataDir: c.DataDir, Name: "base", EnvdPath: envdPath, Logger: log})
	if err == nil {
		err = refreshDerivedTemplates(bctx, c.DataDir, envdPath, log)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}

	// Both halves run here, so the secret between them needs no configuration; the agent
	// still checks it, like a remote one.
	if c.AgentToken == "" {
		c.AgentToken = hostreg.NewToken()
	}
	key, err := devAPIKey(c)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := cp.RegisterKey(ctx, st, key, "hearth dev", store.DefaultTeam); err != nil {
		return err
	}

	// The control plane reaches the agent's proxy over a Unix socket: one loopback TCP hop
	// fewer for every proxied byte.
	// (A Unix socket path must fit in 108 bytes; a longer data dir keeps the TCP hop.)
	if sock := filepath.Join(c.DataDir, "agent-proxy.sock"); len(sock) < 100 {
		a.ProxySocket = sock
		c.LocalProxySockets = map[string]string{devHostID: sock}
	}
	// Better still, the control plane hands requests to the agent's proxy in memory once it
	// runs; WebSockets (and requests before then) take the socket.
	a.InProcess = proxy.NewInProcess()
	c.LocalProxies = map[string]*proxy.InProcess{devHostID: a.InProcess}
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	errc := make(chan error, 2)
	apiReady := make(chan string, 1)
	go func() {
		errc <- runControlPlane(ctx, c, st, log, func(api, proxy net.Addr, domain string, ptls *proxyTLS) {
			apiReady <- api.String()
			printDevBanner(key, api, proxy, tlsBanner(ptls, domain))
		})
	}()
	var apiAddr string
	select {
	case apiAddr = <-apiReady:
	case err := <-errc:
		return err
	}
	a.DataDir = c.DataDir
	a.AgentToken = c.AgentToken
	a.DefaultUser = "user"
	a.ControlPlane = "http://" + apiAddr
	a.HostID = devHostID
	a.StopOnExit = true
	a.BenchProxyOnRPC = c.BenchSharedProxyAddr != ""
	go func() { errc <- runAgent(ctx, a, log, nil) }()
	// Either part ending ends both; wait for the other so the agent can stop its sandboxes.
	err = <-errc
	cancelAll()
	return errors.Join(err, <-errc)
}

// devHostID is the agent's host ID in hearth dev.
const devHostID = "local"

// devAPIKey returns --api-key, else the key saved in the data dir, else a new saved one.
func devAPIKey(c serverConfig) (string, error) {
	if c.APIKey != "" {
		if !cp.ValidKey(c.APIKey) {
			return "", errors.New("--api-key must be \"e2b_\" followed by hex digits (the E2B SDKs reject other shapes)")
		}
		return c.APIKey, nil
	}
	path := filepath.Join(c.DataDir, "api-key")
	if b, err := os.ReadFile(path); err == nil {
		if k := strings.TrimSpace(string(b)); cp.ValidKey(k) {
			return k, nil
		}
	}
	k := cp.NewAPIKey()
	if err := os.WriteFile(path, []byte(k+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save API key: %w", err)
	}
	return k, nil
}

func printDevBanner(key string, api, proxy net.Addr, tlsNote string) {
	fmt.Printf(`
Hearth is running. Point the E2B SDKs at it:

  export E2B_API_URL=http://%s
  export E2B_SANDBOX_URL=http://%s
  export E2B_API_KEY=%s

Dashboard: http://%s/dashboard/ (sign in with the API key above)

`, localhostAddr(api), localhostAddr(proxy), key, localhostAddr(api))
	if tlsNote != "" {
		fmt.Print(tlsNote, "\n")
	}
}

// localhostAddr shows loopback addresses as localhost, as users type them.
func localhostAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return "localhost:" + port
	}
	return a.String()
}

// refreshDerivedTemplates brings envd up to date in every template derived with
// `hearth template build --from`, built through the API or from an image, as the base
// template's build does for base.
func refreshDerivedTemplates(ctx context.Context, dataDir, envdPath string, log *slog.Logger) error {
	entries, _ := os.ReadDir(filepath.Join(dataDir, "templates"))
	for _, e := range entries {
		t, err := template.Open(dataDir, e.Name())
		if !e.IsDir() || err != nil || !t.Meta.Derived() {
			continue
		}
		if _, err := template.Build(ctx, template.BuildOptions{DataDir: dataDir, Name: t.Name, EnvdPath: envdPath, Logger: log}); err != nil {
			return err
		}
	}
	return nil
}
