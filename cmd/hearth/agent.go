package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/agent"
	"github.com/hearthsh/hearth/internal/agent/sandbox"
	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/conntrack"
	"github.com/hearthsh/hearth/internal/egressproxy"
	"github.com/hearthsh/hearth/internal/envd"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker"
	"github.com/hearthsh/hearth/internal/runtime/gvisor"
	"github.com/hearthsh/hearth/internal/runtime/qemu"
	"github.com/hearthsh/hearth/internal/template"
)

// agentConfig is what `hearth agent` (and `hearth dev`) needs to run a host agent.
type agentConfig struct {
	DataDir   string
	RPCAddr   string
	ProxyAddr string
	// ProxySocket, when set, is a Unix socket the sandbox proxy also serves on, for a
	// control plane on the same machine (hearth dev).
	ProxySocket string
	// InProcess, when set, is given the sandbox proxy (with its token check) for a control
	// plane in this process (hearth dev).
	InProcess *proxy.InProcess
	// BenchProxyOnRPC makes the RPC listener also serve proxy traffic (requests that carry
	// the sandbox routing header), for the benchmark's shared-transport arm (hearth dev
	// --bench-shared-proxy-listen); off by default.
	BenchProxyOnRPC bool
	Runtime         string
	Runsc           string
	PoolCIDR        string
	SlotPrefix      string
	DefaultUser     string
	// DefaultDiskMiB is the disk size of sandboxes whose template names none.
	DefaultDiskMiB int
	// MaxSandboxes caps the sandboxes running at once (paused ones do not count); 0: no cap.
	MaxSandboxes int
	// ImageCacheMiB caps the OCI layer cache of image builds (0: no cap).
	ImageCacheMiB int64
	// ControlPlane is the control plane's URL for heartbeats; empty runs the agent alone.
	ControlPlane string
	AgentToken   string
	HostID       string
	// AdvertiseRPC and AdvertiseProxy are the addresses the control plane dials; default the
	// bound listen addresses.
	AdvertiseRPC   string
	AdvertiseProxy string
	// StopOnExit destroys running sandboxes when the agent exits (hearth dev); otherwise they
	// keep running until the next start reclaims them.
	StopOnExit bool
	// QEMUAccel is the qemu runtime's accelerator: auto, tcg or kvm.
	QEMUAccel string
	// EgressInspectPort is the TCP port of the egress inspector (domain allow-lists) on
	// every host address; 0 picks a free one. EgressResolve pins names it resolves.
	EgressInspectPort int
	EgressResolve     []string
	// FC configures the firecracker runtime: binaries and guest kernel.
	FC fcFlags
	// Artifacts is where paused sandboxes are uploaded for other hosts: a directory or an
	// s3:// URL (internal/artifacts); empty keeps them on this host.
	Artifacts string
	// WarmPool is --warm-pool (template=count,...); WarmPoolCPUs and WarmPoolMemoryMiB the
	// shape of its sandboxes.
	WarmPool          string
	WarmPoolCPUs      int
	WarmPoolMemoryMiB int
}

func init() {
	var (
		c         agentConfig
		pprofAddr string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: sandboxes of this machine, their network and their proxy",
		Long: "Runs the host agent as root. It serves the hostagent.v1 API (HTTP/2 cleartext) on " +
			"--listen and the sandbox proxy (HTTP/1.1 and WebSocket) on --proxy-listen. At start it " +
			"removes everything a previous run left behind (runtime processes, network slots, " +
			"cgroups) and keeps paused sandboxes.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			if err := startPprof(ctx, pprofAddr, log); err != nil {
				return err
			}
			return runAgent(ctx, c, log, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "data directory: templates, sandboxes, snapshots")
	pprofFlag(f, &pprofAddr)
	f.StringVar(&c.RPCAddr, "listen", "127.0.0.1:5008", "address of the hostagent.v1 API (loopback by default: bind a private address on purpose for a remote control plane)")
	f.StringVar(&c.ProxyAddr, "proxy-listen", "127.0.0.1:5007", "address of the sandbox proxy (loopback by default, like --listen)")
	f.StringVar(&c.Runtime, "runtime", "gvisor", "sandbox runtime: gvisor, qemu or firecracker")
	f.StringVar(&c.QEMUAccel, "qemu-accel", qemu.AccelAuto, "qemu runtime accelerator: auto (KVM if a probe boot works, else TCG), tcg or kvm")
	f.StringVar(&c.FC.Firecracker, "firecracker", "", "firecracker runtime: firecracker binary (default: bin/firecracker next to hearth, else PATH)")
	f.StringVar(&c.FC.Jailer, "jailer", "", "firecracker runtime: jailer binary; empty runs firecracker without a jail (development only)")
	f.StringVar(&c.FC.Kernel, "fc-kernel", "", "firecracker runtime: guest kernel, an uncompressed vmlinux (default <data-dir>/vm/vmlinux)")
	f.StringVar(&c.Runsc, "runsc", "", "runsc binary (default: bin/runsc next to hearth, else PATH)")
	f.StringVar(&c.PoolCIDR, "pool", netslot.DefaultCIDR.String(), "IPv4 pool for sandbox network slots, cut into /30s")
	f.StringVar(&c.SlotPrefix, "slot-prefix", netslot.DefaultPrefix, "name prefix of this agent's netns, interfaces and nftables table")
	f.StringVar(&c.DefaultUser, "default-user", "user", "user sandbox commands run as unless the caller names one")
	diskFlag(f, &c.DefaultDiskMiB)
	maxSandboxesFlag(f, &c.MaxSandboxes)
	c.warmPoolFlags(f)
	imageCacheFlag(f, &c.ImageCacheMiB)
	f.StringVar(&c.ControlPlane, "control-plane", "", "control plane URL to register with and send heartbeats to, e.g. http://10.0.0.1:3000; several, comma-separated (one per replica), are tried in turn")
	f.StringVar(&c.AgentToken, "agent-token", os.Getenv("HEARTH_AGENT_TOKEN"), "secret shared with the control plane, required: sent with heartbeats and required on every call the agent serves ($HEARTH_AGENT_TOKEN)")
	f.StringVar(&c.HostID, "host-id", "", "this host's ID in the control plane (default: the hostname)")
	f.StringVar(&c.AdvertiseRPC, "advertise-rpc", "", "address the control plane dials for the API (default: the --listen address)")
	f.StringVar(&c.AdvertiseProxy, "advertise-proxy", "", "address the control plane dials for sandbox traffic (default: the --proxy-listen address)")
	f.StringVar(&c.Artifacts, "artifacts", "", "shared store for paused sandboxes, so another agent can resume them: a directory every agent sees (/path, e.g. on NFS) or s3://bucket/prefix?endpoint=http://host:9000&region=r with credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; empty keeps snapshots on this host")
	c.egressFlags(f)
	rootCmd.AddCommand(cmd)
}

// runAgent runs an agent until ctx ends. ready, if set, is called with the bound addresses.
func runAgent(ctx context.Context, c agentConfig, log *slog.Logger, ready func(rpc, proxy net.Addr)) error {
	if os.Geteuid() != 0 {
		return errors.New("the host agent must run as root: it creates network namespaces and sandboxes")
	}
	if c.AgentToken == "" {
		return errors.New("--agent-token (or $HEARTH_AGENT_TOKEN) is required: the control plane's token, which the agent sends with its heartbeats and requires on every call it serves")
	}
	if c.DefaultDiskMiB < minDiskMiB {
		return fmt.Errorf("--default-disk-mib %d: want at least %d", c.DefaultDiskMiB, minDiskMiB)
	}
	if c.ImageCacheMiB < 0 {
		return fmt.Errorf("--image-cache-mib %d: want 0 (no limit) or more", c.ImageCacheMiB)
	}
	if c.MaxSandboxes < 0 {
		return fmt.Errorf("--max-sandboxes %d: want 0 (no limit) or more", c.MaxSandboxes)
	}
	warmPool, err := c.warmPool()
	if err != nil {
		return err
	}
	if c.HostID == "" {
		c.HostID, _ = os.Hostname()
	}
	if !hostreg.ValidHostID(c.HostID) {
		return fmt.Errorf("--host-id %q: want %s", c.HostID, hostreg.HostIDForm)
	}
	var (
		store artifacts.Store
		share *templateShare
	)
	if c.Artifacts != "" {
		if store, err = artifacts.Open(c.Artifacts, log); err != nil {
			return fmt.Errorf("--artifacts: %w", err)
		}
		share = newTemplateShare(store, c.DataDir, log)
	}
	driver, err := newDriver(c, log)
	if err != nil {
		return err
	}
	cidr, err := netip.ParsePrefix(c.PoolCIDR)
	if err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	resolve, err := pinnedResolver(c.EgressResolve)
	if err != nil {
		return err
	}
	// The inspector's port goes into the slots' redirect rules, so it is bound first.
	inspectLn, err := egressproxy.Listen(c.SlotPrefix, c.EgressInspectPort)
	if err != nil {
		return fmt.Errorf("egress inspector: %w", err)
	}
	defer inspectLn.Close()
	inspectPort := uint16(inspectLn.Addr().(*net.TCPAddr).Port)
	slots, err := netslot.New(netslot.Config{CIDR: cidr, Prefix: c.SlotPrefix, InspectPort: inspectPort, Logger: log})
	if err != nil {
		return err
	}
	var slotOpts []netslot.AcquireOption
	if t, ok := driver.(runtime.TAPDriver); ok && t.NeedsTAP() {
		slotOpts = append(slotOpts, netslot.WithTAP())
	}
	conns := &conntrack.Tracker{}
	// The inspector needs the manager (whose sandbox has which domains) and the manager
	// the inspector (to end a sandbox's connections when its policy changes); both exist
	// before anything is served.
	var inspector *egressproxy.Server
	home := "/home/" + c.DefaultUser
	if c.DefaultUser == "root" {
		home = "/root"
	}
	mgr := sandbox.New(sandbox.Config{
		DataDir:        filepath.Join(c.DataDir, "sandboxes"),
		Driver:         driver,
		Slots:          slots,
		SlotOpts:       slotOpts,
		Conns:          conns,
		Templates:      templateResolver(c.DataDir),
		Log:            log,
		DefaultUser:    c.DefaultUser,
		DefaultDiskMiB: c.DefaultDiskMiB,
		MaxActive:      c.MaxSandboxes,
		WarmPool:       warmPool,
		Artifacts:      store,
		FetchTemplate:  share.fetchFunc(),
		DefaultWorkdir: home,
		DropConnections: func(guest netip.Addr) {
			if n := inspector.CloseFrom(guest); n > 0 {
				log.Info("closed inspected connections", "sandbox_addr", guest, "count", n)
			}
		},
	})
	inspector, err = egressproxy.New(egressproxy.Config{
		Lookup: mgr.EgressDomains, Allowed: slots.InspectAllowed, Resolve: resolve, Log: log,
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = mgr.Recover(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := mgr.StartWarmPool(); err != nil {
		return fmt.Errorf("--warm-pool: %w", err)
	}
	// Pooled sandboxes are of no use without this agent: they go with it, whatever
	// StopOnExit says (the next start would remove them anyway).
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		mgr.StopWarmPool(dctx)
	}()
	if share != nil {
		go share.run(ctx)
	}
	a := agent.New(mgr, conns, c.Runtime, log)
	go a.RunMetrics(ctx)
	a.EnableTemplateBuilds(c.DataDir)
	a.SetImageCacheLimit(c.ImageCacheMiB << 20)
	if share != nil {
		a.SetTemplateArtifactDropper(share.drop)
	}
	go func() {
		if err := inspector.Serve(inspectLn); err != nil {
			log.Error("egress inspector stopped", "err", err)
		}
	}()
	defer inspector.Close()

	rpcLn, proxyLn, err := listenBoth(c.RPCAddr, c.ProxyAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	rpcPath, rpcHandler := a.RPCHandler()
	mux.Handle(rpcPath, agent.RequireControlPlane(c.AgentToken, rpcHandler))
	proxyHandler := agent.RequireControlPlaneProxy(c.AgentToken, a.ProxyHandler())
	rpcRoot := benchProxyOnRPC(c.BenchProxyOnRPC, mux, proxyHandler)
	rpcSrv := newServer(rpcRoot, true)
	proxySrv := newServer(proxyHandler, false)
	if c.InProcess != nil {
		c.InProcess.Set(proxyHandler)
	}
	proxySrv.ConnContext = proxy.ConnContext
	srvs, lns := []*http.Server{rpcSrv, proxySrv}, []net.Listener{rpcLn, proxyLn}
	if c.ProxySocket != "" {
		ln, err := listenUnix(c.ProxySocket)
		if err != nil {
			rpcLn.Close()
			proxyLn.Close()
			return err
		}
		srvs, lns = append(srvs, proxySrv), append(lns, ln) // one server, two listeners
	}

	log.Info("agent ready", "rpc", rpcLn.Addr().String(), "proxy", proxyLn.Addr().String(), "runtime", c.Runtime,
		"data_dir", c.DataDir, "egress_inspector_port", inspectPort)
	if c.ControlPlane != "" {
		hb := heartbeatSender(c, a, mgr, share, rpcLn.Addr().String(), proxyLn.Addr().String(), log)
		go hb.Run(ctx)
	}
	if ready != nil {
		ready(rpcLn.Addr(), proxyLn.Addr())
	}
	err = serveUntil(ctx, srvs, lns)
	if c.StopOnExit {
		log.Info("stopping running sandboxes")
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if serr := mgr.Shutdown(dctx); serr != nil {
			log.Warn("stop sandboxes", "err", serr)
		}
		// Nothing runs any more: remove the runtime's mounts and the network table too.
		if rerr := driver.Reclaim(dctx); rerr != nil {
			log.Warn("clean up runtime", "err", rerr)
		}
		if terr := slots.Teardown(dctx); terr != nil {
			log.Warn("remove network slots", "err", terr)
		}
		cancel()
	}
	return err
}

func newDriver(c agentConfig, log *slog.Logger) (runtime.Driver, error) {
	switch c.Runtime {
	case "gvisor":
		bin, err := findRunsc(c.Runsc)
		if err != nil {
			return nil, err
		}
		return gvisor.New(gvisor.Config{
			Runsc:       bin,
			StateDir:    filepath.Join(c.DataDir, "runsc"),
			SnapshotDir: filepath.Join(c.DataDir, "template-snapshots"),
			// Per agent, since Reclaim removes everything under it: two agents on one
			// machine must not reclaim each other's sandboxes.
			CgroupParent: "hearth-" + c.SlotPrefix,
			Logger:       log,
		})
	case "qemu":
		return qemu.New(qemu.Config{
			DataDir: filepath.Join(c.DataDir, "vm"),
			Accel:   c.QEMUAccel,
			Logger:  log,
		})
	case "firecracker":
		return newFirecracker(c, log)
	default:
		return nil, fmt.Errorf("--runtime %q is not available: this build supports gvisor, qemu and firecracker", c.Runtime)
	}
}

// defaultDiskMiB is E2B's disk size on its base (Hobby) tier: 10 GiB. Disk limits bound
// what a sandbox writes on top of its template; unused space costs the host nothing.
const (
	defaultDiskMiB = 10240
	minDiskMiB     = 64
)

// maxSandboxesFlag defines --max-sandboxes (agent and dev).
func maxSandboxesFlag(f *pflag.FlagSet, v *int) {
	f.IntVar(v, "max-sandboxes", 0, "most sandboxes running at once on this host (paused ones do not count): creates and resumes past it fail, and the control plane places elsewhere; 0: no limit")
}

// warmPoolFlags defines --warm-pool and the shape of its sandboxes (agent and dev).
func (c *agentConfig) warmPoolFlags(f *pflag.FlagSet) {
	f.StringVar(&c.WarmPool, "warm-pool", "", "sandboxes to keep booted ahead of need, per template: template=count,..., e.g. base=2,code-interpreter-v1=1; "+
		"a create of that template with the pool's CPUs, memory and the template's disk size claims one instead of booting, and the pool refills in the background; each costs what an idle sandbox does. "+
		"With a control plane an entry may also name one of its templates, by name or ID with at most one :tag (my-tpl=2,my-tpl:prod=1; the bare name is tag default): "+
		"the pool keeps the build the tag points at, in the shape the control plane's creates of it ask for, and follows the tag when it moves")
	f.IntVar(&c.WarmPoolCPUs, "warm-pool-cpus", 2, "vCPUs of warm pool sandboxes: only creates asking for as many claim one (the control plane's default is 2)")
	f.IntVar(&c.WarmPoolMemoryMiB, "warm-pool-memory-mib", 512, "memory (MiB) of warm pool sandboxes: only creates asking for as much claim one (the control plane's default is 512)")
}

// warmPool checks the --warm-pool flags.
func (c *agentConfig) warmPool() (sandbox.WarmPool, error) {
	sizes, err := sandbox.ParseWarmPool(c.WarmPool)
	if err != nil {
		return sandbox.WarmPool{}, fmt.Errorf("--warm-pool %q: %w", c.WarmPool, err)
	}
	if len(sizes) == 0 {
		return sandbox.WarmPool{}, nil // the shape flags size nothing
	}
	if c.Runtime != "gvisor" {
		return sandbox.WarmPool{}, fmt.Errorf("--warm-pool: the %s runtime cannot hand a booted sandbox to a create; only gvisor can", c.Runtime)
	}
	if c.WarmPoolCPUs < 1 {
		return sandbox.WarmPool{}, fmt.Errorf("--warm-pool-cpus %d: want at least 1", c.WarmPoolCPUs)
	}
	if c.WarmPoolMemoryMiB < 64 {
		return sandbox.WarmPool{}, fmt.Errorf("--warm-pool-memory-mib %d: want at least 64", c.WarmPoolMemoryMiB)
	}
	// With a control plane, entries that are no template of this host are its refs.
	return sandbox.WarmPool{Sizes: sizes, CPUs: c.WarmPoolCPUs, MemoryMiB: c.WarmPoolMemoryMiB, ControlPlane: c.ControlPlane != ""}, nil
}

// imageCacheFlag defines --image-cache-mib (agent and dev).
func imageCacheFlag(f *pflag.FlagSet, v *int64) {
	f.Int64Var(v, "image-cache-mib", template.DefaultImageCacheMaxBytes>>20, "size (MiB) the cache of pulled OCI image layers is cut to after each image build, least recently used first; built templates keep their own copy, so only rebuilds pull again; 0: no limit")
}

// diskFlag defines --default-disk-mib (agent and dev).
func diskFlag(f *pflag.FlagSet, v *int) {
	f.IntVar(v, "default-disk-mib", defaultDiskMiB, "disk size (MiB) of sandboxes whose template names none: writes past it fail with ENOSPC in the sandbox")
}

// fcFlags are the firecracker runtime's flags.
type fcFlags struct{ Firecracker, Jailer, Kernel string }

// newFirecracker builds the firecracker driver. The jailer runs Firecracker as nobody, in a
// chroot under the data dir (hard links need the sandbox dirs' filesystem), in a cgroup per
// agent.
func newFirecracker(c agentConfig, log *slog.Logger) (runtime.Driver, error) {
	bin := c.FC.Firecracker
	if bin == "" {
		bin = findBinary("firecracker")
	}
	kernel := c.FC.Kernel
	if kernel == "" {
		kernel = filepath.Join(c.DataDir, "vm", "vmlinux")
	}
	return firecracker.New(firecracker.Config{
		Firecracker: bin, Jailer: c.FC.Jailer, UID: 65534, GID: 65534,
		Kernel: kernel, RunDir: filepath.Join(c.DataDir, "fc"), ImageDir: filepath.Join(c.DataDir, "fc-images"),
		// Per agent, since Reclaim removes everything under them.
		IDPrefix: "hearth-" + c.SlotPrefix, CgroupParent: "hearth-fc-" + c.SlotPrefix,
		Logger: log,
	})
}

// findBinary looks for name next to the hearth executable, then on PATH; it returns name
// itself if neither has it, for the driver to report.
func findBinary(name string) string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

// findRunsc looks for runsc where `make runsc` puts it, then on PATH.
func findRunsc(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "runsc")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("runsc"); err == nil {
		return p, nil
	}
	return "", errors.New("runsc not found: build it with `make runsc` (bin/runsc) or pass --runsc")
}

// templateResolver opens built templates under the data dir.
func templateResolver(dataDir string) sandbox.TemplateFunc {
	return func(name string) (runtime.Template, error) {
		t, err := template.Open(dataDir, name)
		if err != nil {
			return runtime.Template{}, err
		}
		return t.Runtime(), nil
	}
}

// heartbeatSender registers the agent with the control plane and keeps it fresh.
// The warm pool's refs of the control plane go with every heartbeat, and its answers to
// them to the pool.
func heartbeatSender(c agentConfig, a *agent.Agent, mgr *sandbox.Manager, share *templateShare, rpcAddr, proxyAddr string, log *slog.Logger) *hostreg.Sender {
	if c.AdvertiseRPC != "" {
		rpcAddr = c.AdvertiseRPC
	}
	if c.AdvertiseProxy != "" {
		proxyAddr = c.AdvertiseProxy
	}
	return &hostreg.Sender{
		ControlPlane: c.ControlPlane,
		Token:        c.AgentToken,
		HostID:       c.HostID,
		TokenFile:    filepath.Join(c.DataDir, "host-token"),
		Log:          log,
		Build: func(ctx context.Context) (hostreg.Heartbeat, error) {
			u, err := a.Usage()
			if err != nil {
				return hostreg.Heartbeat{}, err
			}
			return hostreg.Heartbeat{
				RPCAddr: rpcAddr, ProxyAddr: proxyAddr, Runtime: u.GetRuntime(), CPUs: int(u.GetCpus()),
				MemoryTotalMiB: int64(u.GetMemoryTotalBytes() >> 20), MemoryAvailableMiB: int64(u.GetMemoryAvailableBytes() >> 20),
				MemoryCommittedMiB: int64(u.GetMemoryCommittedMib()),
				SandboxesRunning:   int(u.GetSandboxesRunning()), SandboxesPaused: int(u.GetSandboxesPaused()),
				CPUsCommitted: a.CommittedCPUs(), MaxSandboxes: c.MaxSandboxes,
				Templates: builtTemplates(c.DataDir, share),
				WarmPool:  mgr.WarmRefs(),
			}, nil
		},
		Answered: func(hb hostreg.Heartbeat, builtAt time.Time, ans hostreg.Answer) {
			if len(hb.WarmPool) == 0 {
				return
			}
			targets := make(map[string]sandbox.WarmTarget, len(ans.WarmPool))
			for ref, t := range ans.WarmPool {
				targets[ref] = sandbox.WarmTarget{Template: t.Template, Artifact: t.Artifact, BuildID: t.BuildID,
					CPUs: t.CPUs, MemoryMiB: t.MemoryMiB, DiskMiB: t.DiskMiB, Err: t.Error}
			}
			mgr.SetWarmTargets(builtAt, hb.WarmPool, targets)
		},
	}
}

// builtTemplates lists the templates built under the data dir.
func builtTemplates(dataDir string, share *templateShare) []hostreg.Template {
	entries, _ := os.ReadDir(filepath.Join(dataDir, "templates"))
	var out []hostreg.Template
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		t, err := template.Open(dataDir, e.Name())
		if err != nil {
			continue
		}
		out = append(out, hostreg.Template{Name: t.Name, Version: t.Version(), EnvdVersion: envd.Version, DiskMiB: t.Meta.DiskMiB,
			Artifact: string(share.published(t.Name, t.Version()))})
	}
	return out
}

func (c *agentConfig) egressFlags(f *pflag.FlagSet) {
	f.IntVar(&c.EgressInspectPort, "egress-inspect-port", 0, "TCP port of the egress inspector that judges sandboxes' HTTP and HTTPS connections by domain (0: a free port outside the kernel's ephemeral range, so the host rule naming it never meets another socket's port while the agent is down; only redirected sandbox connections reach it)")
	f.StringArrayVar(&c.EgressResolve, "egress-resolve", nil, "NAME=IPv4 the egress inspector uses instead of DNS for NAME (repeatable; for hosts without DNS, and tests)")
}

// pinnedResolver resolves the names pinned by --egress-resolve to their addresses and
// everything else through DNS.
func pinnedResolver(pins []string) (func(ctx context.Context, host string) ([]netip.Addr, error), error) {
	pinned := map[string][]netip.Addr{}
	for _, p := range pins {
		name, addr, ok := strings.Cut(p, "=")
		a, err := netip.ParseAddr(addr)
		if !ok || name == "" || err != nil || !a.Is4() {
			return nil, fmt.Errorf("--egress-resolve %q: want NAME=IPv4", p)
		}
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		pinned[name] = append(pinned[name], a)
	}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		if as, ok := pinned[strings.ToLower(strings.TrimSuffix(host, "."))]; ok {
			return as, nil
		}
		return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	}, nil
}
