package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/internal/template"
)

// templateDefaultDataDir is where the agent keeps templates and sandboxes unless told otherwise.
const templateDefaultDataDir = "/var/lib/hearth"

func init() {
	tmpl := &cobra.Command{
		Use:   "template",
		Short: "Build and inspect sandbox templates",
	}
	tmpl.AddCommand(newTemplateBuildCmd())
	rootCmd.AddCommand(tmpl)
}

// templateBuildFlags are `hearth template build`'s flags: those of a local build on an agent
// host, those of a build through the API, and the ones both take.
type templateBuildFlags struct {
	local bool
	// Local builds.
	dataDir, envdPath, mirror string
	rebuild                   bool
	diskMiB                   int
	// Both.
	from    string
	run     []string
	timeout time.Duration
	// API builds.
	api                               cliClientFlags
	image, registryUser, registryPass string
	registryGiven                     bool // as flags, not only from the environment
	dockerfile, startCmd, readyCmd    string
	cpus, memoryMB                    int
	tags                              []string
}

// localOnly and apiOnly are the flags that belong to one kind of build.
var (
	templateLocalOnly = []string{"envd", "mirror", "rebuild", "disk-mib"}
	templateAPIOnly   = []string{"image", "registry-username", "registry-password", "file", "start-cmd", "ready-cmd",
		"cpu", "memory-mb", "tag", "json", "api-url", "api-key", "request-timeout"}
)

func newTemplateBuildCmd() *cobra.Command {
	var f templateBuildFlags
	build := &cobra.Command{
		Use:   "build NAME [CONTEXT-DIR]",
		Short: "Build a template through the API, or (--local, base) on this agent host",
		Long: "Builds template NAME.\n\n" +
			"Through the control plane's API (the default): like E2B's Template SDK, from --from TEMPLATE, " +
			"--image REF (an OCI image) or -f Dockerfile (default: the base template), with --run " +
			"commands (as root), --start-cmd/--ready-cmd (the template's start snapshot has the start command " +
			"running), and the files of a Dockerfile's COPY/ADD read from CONTEXT-DIR (default: the " +
			"Dockerfile's directory) and uploaded by content hash. The build's log goes to stderr as it " +
			"comes; --json prints the final status. A failed build exits 1 naming the failing step. " +
			"--timeout or Ctrl-C stops following the build (it goes on on the server).\n\n" +
			"On this host (--local or --data-dir given, and always for base): builds under " +
			"DATA-DIR/templates/NAME: \"base\", or with --from a template derived from a built one by running " +
			"--run commands in a copy of it (as root, on this host, in a chroot with the host's network: your " +
			"commands, not isolated). The slow debootstrap runs once and is cached; later builds only " +
			"re-inject envd, so a template never carries a stale envd. Agents announce every built template " +
			"to the control plane within seconds. Needs root (and debootstrap for base).\n" + exitCodesHelp,
		Args: cliArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if templateBuildsLocally(cmd, &f, args[0]) {
				if err := onlyFlags(cmd, templateAPIOnly, "builds through the API (base, --local and --data-dir build on this host)"); err != nil {
					return cliFail(cmd, err)
				}
				if len(args) > 1 {
					return cliFail(cmd, usagef("a CONTEXT-DIR is for builds through the API (without --local or --data-dir)"))
				}
				return runLocalTemplateBuild(cmd, f, args[0])
			}
			return cliRun(func(cmd *cobra.Command, args []string) error {
				if err := onlyFlags(cmd, templateLocalOnly, "local builds: add --local to build on this host"); err != nil {
					return err
				}
				f.registryGiven = cmd.Flags().Changed("registry-username") || cmd.Flags().Changed("registry-password")
				return runAPITemplateBuild(cmd, f, args)
			})(cmd, args)
		},
	}
	fl := build.Flags()
	fl.BoolVar(&f.local, "local", false, "build on this agent host, in DATA-DIR, instead of through the API (implied by --data-dir, and for base)")
	fl.StringVar(&f.dataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "local: data directory (templates go under DATA-DIR/templates); giving it builds locally")
	fl.StringVar(&f.envdPath, "envd", "", "local: envd binary to inject (default: envd next to this binary, else ./bin/envd)")
	fl.StringVar(&f.mirror, "mirror", "", "local: Debian mirror (default: the one in this machine's apt sources)")
	fl.BoolVar(&f.rebuild, "rebuild", false, "local: run debootstrap again even when the rootfs is cached")
	fl.IntVar(&f.diskMiB, "disk-mib", 0, "local: disk size (MiB) of the template's sandboxes, kept until set again (default: the agent's --default-disk-mib)")
	fl.StringVar(&f.from, "from", "", "start from this built template (e.g. base); with -f it replaces the Dockerfile's FROM")
	fl.StringArrayVar(&f.run, "run", nil, "shell command to run as root in the new template, e.g. \"apt-get update && apt-get install -y nodejs\" (repeatable, in order; after a Dockerfile's steps)")
	fl.DurationVar(&f.timeout, "timeout", 20*time.Minute, "give up after this long (an API build goes on on the server)")
	fl.StringVar(&f.image, "image", "", "start from this OCI image, e.g. python:3.12-slim (the agent pulls it)")
	fl.StringVar(&f.registryUser, "registry-username", os.Getenv("HEARTH_REGISTRY_USERNAME"), "username for pulling --image (default $HEARTH_REGISTRY_USERNAME)")
	fl.StringVar(&f.registryPass, "registry-password", os.Getenv("HEARTH_REGISTRY_PASSWORD"), "password for pulling --image (default $HEARTH_REGISTRY_PASSWORD)")
	fl.StringVarP(&f.dockerfile, "file", "f", "", "Dockerfile to build (FROM, RUN, COPY/ADD, ENV/ARG, WORKDIR, USER, CMD/ENTRYPOINT)")
	fl.StringVar(&f.startCmd, "start-cmd", "", "command running in every sandbox of the template from its start (taken into the template's start snapshot)")
	fl.StringVar(&f.readyCmd, "ready-cmd", "", "command that succeeds once the start command is ready, e.g. ': </dev/tcp/127.0.0.1/8000' for port 8000 (default with a start command: sleep 20)")
	fl.IntVar(&f.cpus, "cpu", 0, "vCPUs of the template's sandboxes (default 2)")
	fl.IntVar(&f.memoryMB, "memory-mb", 0, "memory (MiB) of the template's sandboxes (default 1024)")
	fl.StringArrayVar(&f.tags, "tag", nil, "tag of the build (repeatable)")
	f.api.register(fl)
	fl.Lookup("sandbox-url").Hidden = true     // builds are only REST
	fl.Lookup("request-timeout").Hidden = true // --timeout bounds the whole build
	build.SetFlagErrorFunc(cliFlagError)
	return build
}

// templateBuildsLocally decides where the build runs: on this host when asked (--local, or a
// --data-dir to build in) and for base, which only agents build; otherwise through the API.
func templateBuildsLocally(cmd *cobra.Command, f *templateBuildFlags, name string) bool {
	return f.local || cmd.Flags().Changed("data-dir") || name == "base"
}

// onlyFlags refuses the flags in names that were given: they are only for what.
func onlyFlags(cmd *cobra.Command, names []string, what string) error {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return usagef("--%s is only for %s", n, what)
		}
	}
	return nil
}

// runLocalTemplateBuild builds in the data dir on this host, as `hearth template build` always did.
func runLocalTemplateBuild(cmd *cobra.Command, f templateBuildFlags, name string) error {
	if f.envdPath == "" {
		f.envdPath = templateDefaultEnvdPath()
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()
	if f.from != "" {
		if _, err := template.Derive(ctx, template.DeriveOptions{
			DataDir: f.dataDir, Name: name, From: f.from, Run: f.run, Progress: os.Stderr, Logger: log,
		}); err != nil {
			return err
		}
	} else if len(f.run) > 0 {
		return fmt.Errorf("--run needs --from: commands run in a copy of another template")
	}
	t, err := template.Build(ctx, template.BuildOptions{
		DataDir: f.dataDir, Name: name, EnvdPath: f.envdPath, Mirror: f.mirror,
		Rebuild: f.rebuild, DiskMiB: f.diskMiB, Progress: os.Stderr, Logger: log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "template %s ready in %s: rootfs %s, %d MiB, build took %.0f s (built %s), envd %s\n",
		t.Name, time.Since(start).Round(time.Millisecond), t.RootFS, t.Meta.SizeBytes>>20,
		t.Meta.BuildSeconds, t.Meta.BuiltAt.Format(time.RFC3339), t.Meta.EnvdSHA256[:12])
	return nil
}

// templateDefaultEnvdPath prefers the envd built next to this binary (make build puts both in bin/).
func templateDefaultEnvdPath() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "envd")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("bin", "envd")
}

func templateEnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
