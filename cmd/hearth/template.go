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
	var (
		dataDir, envdPath, mirror, from string
		run                             []string
		rebuild                         bool
		diskMiB                         int
		timeout                         time.Duration
	)
	build := &cobra.Command{
		Use:   "build NAME",
		Short: "Build a template's root filesystem (debootstrap, cached) and inject envd",
		Long: "Builds template NAME under DATA-DIR/templates/NAME: \"base\", or with --from a template " +
			"derived from a built one by running --run commands in a copy of it (as root, on this host, in " +
			"a chroot with the host's network: your commands, not isolated). The slow debootstrap runs " +
			"once and is cached; later builds only re-inject envd, so a template never carries a stale " +
			"envd. Agents announce every built template to the control plane within seconds. Needs root " +
			"(and debootstrap for base).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if envdPath == "" {
				envdPath = templateDefaultEnvdPath()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			start := time.Now()
			if from != "" {
				if _, err := template.Derive(ctx, template.DeriveOptions{
					DataDir: dataDir, Name: args[0], From: from, Run: run, Progress: os.Stderr, Logger: log,
				}); err != nil {
					return err
				}
			} else if len(run) > 0 {
				return fmt.Errorf("--run needs --from: commands run in a copy of another template")
			}
			t, err := template.Build(ctx, template.BuildOptions{
				DataDir: dataDir, Name: args[0], EnvdPath: envdPath, Mirror: mirror,
				Rebuild: rebuild, DiskMiB: diskMiB, Progress: os.Stderr, Logger: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "template %s ready in %s: rootfs %s, %d MiB, build took %.0f s (built %s), envd %s\n",
				t.Name, time.Since(start).Round(time.Millisecond), t.RootFS, t.Meta.SizeBytes>>20,
				t.Meta.BuildSeconds, t.Meta.BuiltAt.Format(time.RFC3339), t.Meta.EnvdSHA256[:12])
			return nil
		},
	}
	build.Flags().StringVar(&dataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "data directory (templates go under DATA-DIR/templates)")
	build.Flags().StringVar(&envdPath, "envd", "", "envd binary to inject (default: envd next to this binary, else ./bin/envd)")
	build.Flags().StringVar(&mirror, "mirror", "", "Debian mirror (default: the one in this machine's apt sources)")
	build.Flags().BoolVar(&rebuild, "rebuild", false, "run debootstrap again even when the rootfs is cached")
	build.Flags().StringVar(&from, "from", "", "derive NAME from this built template (e.g. base), running the --run commands in a copy")
	build.Flags().StringArrayVar(&run, "run", nil, "shell command to run as root in the derived template, e.g. \"apt-get update && apt-get install -y nodejs\" (repeatable, in order)")
	build.Flags().IntVar(&diskMiB, "disk-mib", 0, "disk size (MiB) of the template's sandboxes, kept until set again (default: the agent's --default-disk-mib)")
	build.Flags().DurationVar(&timeout, "timeout", 20*time.Minute, "give up after this long")
	tmpl.AddCommand(build)
	rootCmd.AddCommand(tmpl)
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
