// Command bench measures what a Hearth user feels, against a running `hearth dev`: sandbox
// creation, command round trips, terminal keystroke latency idle and under heavy proxy
// traffic, proxy overhead per routing form, file transfers, the code interpreter's create →
// first runCode and runCode round trip, template builds through the API and create → first HTTP
// 200 with and without a start snapshot, pause and resume, memory per
// idle sandbox, and the uffd server's restore speed. It prints one table and writes the same
// figures as JSON. scripts/bench.sh (`make bench`) starts hearth dev and runs it; every
// phase is bounded in count and time, and load goes only to loopback and the sandboxes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	APIURL, ProxyURL, AgentAddr, APIKey string
	AgentToken                          string
	// AgentProxy is the agent's sandbox proxy (hearth dev --agent-proxy-listen), for the
	// warm pool's figures; empty skips them.
	AgentProxy string
	// PprofURL and ProfileOut: a CPU profile of hearth dev during the proxy section's req/s rounds.
	PprofURL, ProfileOut string
	LoadServer           string
	Out                  string
	Repo                 string
	Only                 map[string]bool
	HogMB                []int
	PTY                  ptyConfig
	Density              densityConfig
}

func main() {
	// The load generator runs as a child of this same binary.
	if len(os.Args) == 3 && os.Args[1] == "-loadgen" {
		if err := loadgenMain(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	var (
		c    config
		only string
	)
	flag.StringVar(&c.APIURL, "api", "http://127.0.0.1:3000", "hearth REST API URL")
	flag.StringVar(&c.ProxyURL, "proxy", "http://127.0.0.1:3002", "hearth public sandbox proxy URL (hearth dev --proxy-listen)")
	flag.StringVar(&c.AgentToken, "agent-token", os.Getenv("HEARTH_AGENT_TOKEN"), "agent token (hearth dev --agent-token), for the agent API")
	flag.StringVar(&c.AgentAddr, "agent", "127.0.0.1:5008", "hearth agent API address (hearth dev --agent-listen), for sandbox addresses")
	flag.StringVar(&c.AgentProxy, "agent-proxy", "", "hearth agent proxy address (hearth dev --agent-proxy-listen), for the warm pool figures of the create section; empty skips them")
	flag.StringVar(&c.APIKey, "api-key", os.Getenv("HEARTH_API_KEY"), "API key")
	flag.StringVar(&c.LoadServer, "loadserver", "bin/hearth-bench-loadserver", "static loadserver binary to upload into sandboxes")
	flag.StringVar(&c.Out, "out", envOr("BENCH_OUT", "/tmp/hearth-bench.json"), "JSON report path")
	flag.StringVar(&c.Repo, "repo", ".", "repository root, for the uffd benchmark")
	flag.StringVar(&only, "only", "", "comma-separated sections to run (create,exec,pty,proxy,files,templates,codeinterp,pause,density,uffd); empty runs all")
	hog := flag.String("hog-mb", "500,250", "comma-separated MB of touched memory for the pause section (sandboxes have 512 MiB)")
	flag.IntVar(&c.PTY.Samples, "pty-samples", 600, "keystrokes per PTY phase (over the rounds)")
	flag.DurationVar(&c.PTY.Gap, "pty-gap", 20*time.Millisecond, "pause between keystrokes")
	flag.IntVar(&c.PTY.Load.WS, "load-ws", 8, "WebSocket connections in the PTY load")
	flag.Float64Var(&c.PTY.Load.WSRate, "load-ws-rate", 300, "WebSocket messages per second in the PTY load, over all connections (open loop)")
	flag.IntVar(&c.PTY.Load.WSBytes, "load-ws-bytes", 200, "bytes per WebSocket message")
	flag.Float64Var(&c.PTY.Load.PollRate, "load-poll-rate", 30, "REST polls of /api per second in the PTY load (open loop)")
	flag.Float64Var(&c.PTY.Load.DownloadMBps, "load-download-mbps", 50, "MB/s of /blob downloads in the PTY load (open loop)")
	chunkMB := flag.Float64("load-download-chunk-mb", 4, "MB per /blob download in the PTY load")
	flag.IntVar(&c.PTY.Load.MaxInFlight, "load-max-in-flight", 32, "most polls, and most downloads, in flight at once in the PTY load")
	flag.StringVar(&c.PTY.SharedProxy, "shared-proxy", "", "URL of hearth dev's --bench-shared-proxy-listen proxy: the pty section also measures through it (the A/B; scripts/bench.sh sets it)")
	flag.StringVar(&c.PTY.Wrap, "load-wrap", "", "command prefix for the load generator process, e.g. \"taskset -c 1\"")
	flag.BoolVar(&c.PTY.Direct, "pty-direct", false, "investigation: the terminal talks to envd directly, not through the proxy")
	flag.StringVar(&c.PTY.DirectSockets, "pty-direct-sockets", "", "investigation: with -pty-direct, reach envd over its host socket under this sandboxes dir (hearth dev's <data-dir>/sandboxes; gVisor)")
	flag.BoolVar(&c.PTY.Hops, "pty-hops", false, "investigation: also measure terminals through the agent's proxy alone and straight to envd's socket, in turn with the others")
	flag.StringVar(&c.PTY.HopsSockets, "sandboxes-dir", "", "hearth dev's <data-dir>/sandboxes, for -pty-hops (scripts/bench.sh sets it)")
	flag.BoolVar(&c.PTY.OtherSandbox, "load-other-sandbox", false, "investigation: the load goes to a second sandbox, not the terminal's")
	flag.IntVar(&c.PTY.GuestCPU, "load-guest-cpu", 0, "investigation: busy loops inside the terminal's sandbox during the loaded phase")
	flag.BoolVar(&c.PTY.Probe, "probe", false, "investigation: also time direct GETs of the terminal sandbox's /api in both phases")
	flag.IntVar(&c.Density.Target, "density-target", 200, "idle sandboxes the density section ramps up to")
	flag.IntVar(&c.Density.Par, "density-par", 4, "creates at once in the density section")
	flag.DurationVar(&c.Density.Ramp, "density-ramp", 3*time.Minute, "most time the density ramp takes")
	flag.DurationVar(&c.Density.Sustain, "density-sustain", time.Minute, "time of the density section's sustained creates")
	flag.IntVar(&c.Density.SustainMax, "density-sustain-max", 300, "most sustained creates in the density section")
	flag.IntVar(&c.Density.HearthPID, "hearth-pid", 0, "hearth dev's PID, to count its descriptors in the density section (scripts/bench.sh sets it)")
	flag.StringVar(&c.Density.Pool, "slot-pool", "10.238.0.0/16", "hearth dev's --pool, for the density section's network-slot limit")
	flag.StringVar(&c.PprofURL, "pprof", "", "investigation: hearth dev's --pprof-listen URL (http://127.0.0.1:6061): the proxy section takes a CPU profile of hearth over its req/s rounds")
	flag.StringVar(&c.ProfileOut, "pprof-out", "/tmp/hearth-proxy-rps.pprof", "where -pprof writes the profile")
	loadDirect := flag.Bool("load-direct", false, "investigation: the load goes to the sandbox directly, not through the proxy")
	flag.Parse()
	c.PTY.Load.Form = formHeaders
	c.PTY.AgentProxy, c.PTY.AgentToken = c.AgentProxy, c.AgentToken
	if *loadDirect {
		c.PTY.Load.Form = formDirect
	}
	c.PTY.Load.ChunkBytes = int64(*chunkMB * 1e6)
	c.Density.Settle = 5 * time.Second
	c.PTY.Load.Max = 3 * time.Minute
	if c.PTY.Load.WS < 0 || c.PTY.Load.WSRate < 0 || c.PTY.Load.PollRate < 0 || c.PTY.Load.DownloadMBps < 0 ||
		(c.PTY.Load.WSRate > 0 && c.PTY.Load.WS == 0) || (c.PTY.Load.DownloadMBps > 0 && c.PTY.Load.ChunkBytes <= 0) {
		fmt.Fprintln(os.Stderr, "bench: load rates must be 0 or more, -load-ws at least 1 with a WebSocket rate, -load-download-chunk-mb above 0 with a download rate")
		os.Exit(2)
	}
	if only != "" {
		c.Only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			c.Only[strings.TrimSpace(s)] = true
		}
	}
	for _, f := range strings.Split(*hog, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			c.HogMB = append(c.HogMB, n)
		}
	}
	if c.Density.Target < 1 || c.Density.Par < 1 || c.Density.Ramp <= 0 || c.Density.Sustain < 0 || c.Density.SustainMax < 0 {
		fmt.Fprintln(os.Stderr, "bench: -density-target and -density-par must be at least 1, -density-ramp above 0, the sustain flags 0 or more")
		os.Exit(2)
	}
	if c.APIKey == "" {
		fmt.Fprintln(os.Stderr, "bench: -api-key or HEARTH_API_KEY is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, c)
	if rep != nil {
		rep.WriteTable(os.Stdout)
		if werr := rep.WriteJSON(c.Out); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			err = werr
		} else {
			fmt.Printf("\nJSON: %s\n", c.Out)
		}
		if err == nil && rep.Failed() {
			err = fmt.Errorf("some sections failed")
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// run measures every selected section in an order where the heavy ones (many sandboxes, the
// uffd benchmark's CPU) cannot disturb the latency figures.
func run(ctx context.Context, c config) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	proxyBase = c.ProxyURL
	e, err := newEnv(c)
	if err != nil {
		return nil, err
	}
	memTotal, _ := meminfo("MemTotal")
	rep := &Report{Started: time.Now(), Machine: Machine{CPUs: runtime.NumCPU(), LoadAvgBefore: loadAvg(), MemTotalMiB: memTotal >> 20}}
	meter := startCPUMeter()
	defer func() {
		rep.Machine.LoadAvgAfter = loadAvg()
		rep.Machine.BusyPercent = meter.percent()
		rep.Duration = time.Since(rep.Started).Round(time.Second).String()
	}()
	defer func() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := e.killAll(kctx); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}()
	want := func(name string) bool { return c.Only == nil || c.Only[name] }
	section := func(name, def string, fn func(s *Section) error) {
		if !want(name) {
			return
		}
		s := &Section{Name: name, Definition: def}
		rep.Sections = append(rep.Sections, s)
		fmt.Fprintf(os.Stderr, "bench: %s…\n", name)
		start := time.Now()
		if err := fn(s); err != nil {
			s.Error = err.Error()
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v\n", name, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", name, time.Since(start).Round(100*time.Millisecond))
	}

	section("create", createDefinition+" "+warmPoolDefinition, func(s *Section) error {
		if err := runCreate(ctx, e, 20, []int{10, 20}, s); err != nil {
			return err
		}
		return runWarmPool(ctx, e, 15, s)
	})

	// One work sandbox with the load server serves exec, pty, proxy and files.
	var work *target
	if want("exec") || want("pty") || want("proxy") || want("files") {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		sb, err := e.create(wctx, 20*time.Minute)
		if err == nil {
			work, err = e.startLoadServer(wctx, sb)
		}
		cancel()
		if err != nil {
			return rep, fmt.Errorf("work sandbox: %w", err)
		}
	}
	section("exec", execDefinition, func(s *Section) error { return runExec(ctx, e, work, 200, s) })
	section("pty", ptyDefinition, func(s *Section) error { return runPTY(ctx, e, work, c.PTY, s) })
	section("proxy", proxyDefinition, func(s *Section) error {
		return runProxy(ctx, work, proxyConfig{BlobBytes: 100e6, Rounds: 5, RPSClients: 8, RPSDuration: 3 * time.Second, RPSRounds: 3, LatencyN: 200,
			ProfileURL: c.PprofURL, ProfileOut: c.ProfileOut}, s)
	})
	section("files", filesDefinition, func(s *Section) error { return runFiles(ctx, work, 100e6, s) })
	if work != nil {
		if err := e.kill(ctx, work.sb.ID); err != nil {
			return rep, fmt.Errorf("kill work sandbox: %w", err)
		}
	}
	section("templates", templatesDefinition, func(s *Section) error { return runTemplates(ctx, e, 20, s) })
	section("codeinterp", codeinterpDefinition, func(s *Section) error { return runCodeinterp(ctx, e, 10, 100, s) })
	section("pause", pauseDefinition, func(s *Section) error { return runPause(ctx, e, 5, c.HogMB, s) })
	section("density", densityDefinition, func(s *Section) error { return runDensity(ctx, e, c.Density, s) })
	section("uffd", uffdDefinition, func(s *Section) error { return runUffd(ctx, c.Repo, s) })
	return rep, nil
}
