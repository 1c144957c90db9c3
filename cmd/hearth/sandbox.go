package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func init() {
	rootCmd.AddCommand(newSandboxCmd())
}

// newSandboxCmd builds `hearth sandbox` and its subcommands. It is a constructor, not a
// package variable, so tests get fresh flag state for every run.
func newSandboxCmd() *cobra.Command {
	var f cliClientFlags
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sbx"},
		Short:   "Create, inspect and use sandboxes through Hearth's API",
		Long: "Talks to Hearth's REST API (--api-url) and, for exec, shell and cp, to the sandbox " +
			"proxy (--sandbox-url).\n" + exitCodesHelp,
		Args: cliArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	f.register(cmd.PersistentFlags())
	cmd.SetFlagErrorFunc(cliFlagError)
	cmd.AddCommand(
		newSandboxCreateCmd(&f), newSandboxLsCmd(&f), newSandboxExecCmd(&f), newSandboxShellCmd(&f),
		newSandboxCpCmd(&f), newSandboxPauseCmd(&f), newSandboxResumeCmd(&f), newSandboxKillCmd(&f),
		newSandboxNetworkCmd(&f), newSandboxForkCmd(&f), newSandboxURLCmd(&f),
	)
	return cmd
}

func newSandboxCreateCmd(f *cliClientFlags) *cobra.Command {
	var (
		template       string
		timeout        time.Duration
		metadata, envs []string
		autoPause      bool
		net            outboundFlags
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its ID",
		Long:  "Creates a sandbox and prints its ID (or, with --json, the API's answer) on stdout.\n" + exitCodesHelp,
		Args:  cliArgs(cobra.NoArgs),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			md, err := parsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			ev, err := parsePairs("env", envs)
			if err != nil {
				return err
			}
			opts := hearth.CreateOptions{Template: template, Timeout: timeout, Metadata: md, Envs: ev, AutoPause: autoPause,
				AllowInternetAccess: hearth.Bool(!net.noInternet)}
			if len(net.allowOut)+len(net.denyOut) > 0 {
				opts.Network = &hearth.NetworkOptions{AllowOut: net.allowOut, DenyOut: net.denyOut}
			}
			var sb *hearth.Sandbox
			err = f.call(cmd, "Creating a sandbox from template "+template, func(ctx context.Context, c *hearth.Client) (err error) {
				sb, err = c.Create(ctx, opts)
				return err
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), sb.Info())
			}
			fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
			return nil
		}),
	}
	cmd.Flags().StringVar(&template, "template", hearth.DefaultTemplate, "template ID or alias")
	cmd.Flags().DurationVar(&timeout, "timeout", hearth.DefaultSandboxTimeout, "kill the sandbox (or pause it, with --auto-pause) after this long")
	cmd.Flags().StringArrayVar(&metadata, "metadata", nil, "metadata KEY=VALUE to store with the sandbox (repeatable)")
	cmd.Flags().StringArrayVar(&envs, "env", nil, "environment variable KEY=VALUE for every process in the sandbox (repeatable)")
	cmd.Flags().BoolVar(&autoPause, "auto-pause", false, "pause the sandbox at its timeout instead of killing it")
	net.register(cmd)
	return cmd
}

// outboundFlags are a sandbox's outbound policy on the command line.
type outboundFlags struct {
	noInternet        bool
	allowOut, denyOut []string
}

func (o *outboundFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.noInternet, "no-internet", false, "deny all outbound traffic but --allow-out")
	cmd.Flags().StringArrayVar(&o.allowOut, "allow-out", nil, "IPv4 address or CIDR range the sandbox may reach even when denied (repeatable)")
	cmd.Flags().StringArrayVar(&o.denyOut, "deny-out", nil, "IPv4 address or CIDR range the sandbox may not reach (repeatable; 0.0.0.0/0 for all)")
}

func newSandboxNetworkCmd(f *cliClientFlags) *cobra.Command {
	var net outboundFlags
	cmd := &cobra.Command{
		Use:   "network ID",
		Short: "Replace a sandbox's outbound network policy",
		Long: "Replaces the outbound policy of a sandbox as a whole (no flags: everything the host allows). " +
			"A running sandbox gets it at once, connections already open included; a paused one when it " +
			"resumes.\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			return f.call(cmd, "", func(ctx context.Context, c *hearth.Client) error {
				return c.UpdateNetwork(ctx, args[0], hearth.NetworkUpdate{
					AllowOut: net.allowOut, DenyOut: net.denyOut, AllowInternetAccess: hearth.Bool(!net.noInternet),
				})
			})
		}),
	}
	net.register(cmd)
	return cmd
}

func newSandboxForkCmd(f *cliClientFlags) *cobra.Command {
	var (
		count   int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fork ID",
		Short: "Copy a running sandbox, processes included, into new sandboxes",
		Long: "Copies a running sandbox (files, memory, running processes) into --count new sandboxes and " +
			"prints their IDs, one per line (with --json, the API's answers). The original runs on. Copies " +
			"that failed are reported on stderr and the command exits 1.\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			if count < 1 || count > 100 {
				return usagef("--count %d: want 1 to 100", count)
			}
			var res []hearth.ForkResult
			err := f.call(cmd, fmt.Sprintf("Forking %s into %d", args[0], count), func(ctx context.Context, c *hearth.Client) (err error) {
				res, err = c.Fork(ctx, args[0], hearth.ForkOptions{Count: count, Timeout: timeout})
				return err
			})
			if err != nil {
				return err
			}
			var failed []error
			var infos []hearth.CreatedSandbox
			for _, r := range res {
				if r.Err != nil {
					failed = append(failed, r.Err)
					continue
				}
				infos = append(infos, r.Sandbox.Info())
				if !f.json {
					fmt.Fprintln(cmd.OutOrStdout(), r.Sandbox.ID)
				}
			}
			if f.json {
				if err := writeJSON(cmd.OutOrStdout(), infos); err != nil {
					return err
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d of %d copies failed: %w", len(failed), len(res), errors.Join(failed...))
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&count, "count", 1, "how many copies (1 to 100)")
	cmd.Flags().DurationVar(&timeout, "timeout", hearth.DefaultSandboxTimeout, "kill each copy after this long")
	return cmd
}

func newSandboxLsCmd(f *cliClientFlags) *cobra.Command {
	var (
		state    string
		metadata []string
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sandboxes",
		Long:    "Lists running and paused sandboxes as a table (or a JSON array with --json).\n" + exitCodesHelp,
		Args:    cliArgs(cobra.NoArgs),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			opts := hearth.ListOptions{}
			switch state {
			case "":
			case string(hearth.StateRunning), string(hearth.StatePaused), string(hearth.StateLost):
				opts.States = []hearth.SandboxState{hearth.SandboxState(state)}
			default:
				return usagef("--state %q: want running, paused or lost", state)
			}
			md, err := parsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			opts.Metadata = md
			all := []hearth.ListedSandbox{}
			err = f.call(cmd, "", func(ctx context.Context, c *hearth.Client) error {
				for s, err := range c.ListSandboxes(opts).All(ctx) {
					if err != nil {
						return err
					}
					all = append(all, s)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), all)
			}
			return writeSandboxTable(cmd.OutOrStdout(), all)
		}),
	}
	cmd.Flags().StringVar(&state, "state", "", "only sandboxes in this state: running, paused or lost (its host stopped responding)")
	cmd.Flags().StringArrayVar(&metadata, "metadata", nil, "only sandboxes with metadata KEY=VALUE (repeatable; all must match)")
	return cmd
}

func writeSandboxTable(w io.Writer, all []hearth.ListedSandbox) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTEMPLATE\tSTATE\tSTARTED\tEXPIRES\tCPU\tMEMORY\tMETADATA")
	for _, s := range all {
		tmpl := s.TemplateID
		if s.Alias != "" {
			tmpl = s.Alias
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d MiB\t%s\n", s.SandboxID, tmpl, s.State,
			s.StartedAt.Local().Format(time.DateTime), s.EndAt.Local().Format(time.DateTime), s.CPUCount, s.MemoryMB, formatPairs(s.Metadata))
	}
	return tw.Flush()
}

// formatPairs renders metadata as sorted k=v,k2=v2.
func formatPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSandboxPauseCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "pause ID",
		Short: "Pause a running sandbox to disk",
		Long: "Snapshots a running sandbox to disk and stops it; `hearth sandbox resume` brings it back " +
			"where it left off. Exits 4 when the sandbox is not running.\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			return f.call(cmd, "Pausing "+args[0], func(ctx context.Context, c *hearth.Client) error {
				return c.Pause(ctx, args[0])
			})
		}),
	}
}

func newSandboxResumeCmd(f *cliClientFlags) *cobra.Command {
	var (
		timeout   time.Duration
		autoPause bool
	)
	cmd := &cobra.Command{
		Use:   "resume ID",
		Short: "Resume a paused sandbox",
		Long:  "Resumes a paused sandbox with a new timeout. Exits 4 when the sandbox is not paused.\n" + exitCodesHelp,
		Args:  cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			var sb *hearth.Sandbox
			err := f.call(cmd, "Resuming "+args[0], func(ctx context.Context, c *hearth.Client) (err error) {
				sb, err = c.Resume(ctx, args[0], hearth.ResumeOptions{Timeout: timeout, AutoPause: autoPause})
				return err
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), sb.Info())
			}
			return nil
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", hearth.DefaultSandboxTimeout, "kill (or, with --auto-pause, pause) the resumed sandbox after this long")
	cmd.Flags().BoolVar(&autoPause, "auto-pause", false, "pause the sandbox again at its timeout instead of killing it")
	return cmd
}

func newSandboxKillCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "kill ID",
		Short: "Destroy a sandbox, running or paused",
		Long:  "Destroys a sandbox and everything in it. Exits 3 when there is no such sandbox.\n" + exitCodesHelp,
		Args:  cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			return f.call(cmd, "", func(ctx context.Context, c *hearth.Client) error {
				return c.Kill(ctx, args[0])
			})
		}),
	}
}
