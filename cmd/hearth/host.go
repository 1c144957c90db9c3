package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// The host commands go through the control plane's API, not its database: draining pauses
// sandboxes, which only the control plane can ask the agents to do. They need a key of the
// operator's team ("default").

func init() { rootCmd.AddCommand(newHostCmd()) }

func newHostCmd() *cobra.Command {
	var f cliClientFlags
	cmd := &cobra.Command{
		Use:   "host",
		Short: "List, drain and undrain host agents (the operator's team only)",
		Long:  "Talks to Hearth's REST API (--api-url) with a key of the operator's team.\n" + exitCodesHelp,
		Args:  cliArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	f.register(cmd.PersistentFlags())
	cmd.SetFlagErrorFunc(cliFlagError)
	cmd.AddCommand(newHostLsCmd(&f), newHostDrainCmd(&f), newHostUndrainCmd(&f))
	return cmd
}

func newHostLsCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List host agents with their state and load",
		Args:    cliArgs(cobra.NoArgs),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			var hosts []hearth.Host
			err := f.call(cmd, "", func(ctx context.Context, c *hearth.Client) (err error) {
				hosts, err = c.ListHosts(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), hosts)
			}
			return writeHostTable(cmd.OutOrStdout(), hosts)
		}),
	}
}

func writeHostTable(w io.Writer, hosts []hearth.Host) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRUNTIME\tCPUS\tMEMORY COMMITTED/TOTAL\tRUNNING\tPAUSED\tLAST HEARTBEAT")
	for _, h := range hosts {
		state := h.State
		if h.Draining {
			state += ",draining"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d MiB\t%d\t%d\t%s\n", h.ID, state, h.Runtime, h.CPUs,
			h.MemoryCommittedMiB, h.MemoryTotalMiB, h.SandboxesRunning, h.SandboxesPaused, h.LastHeartbeat.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func newHostDrainCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "drain ID",
		Short: "Stop placing sandboxes on a host and pause its running ones",
		Long: "Marks the host draining, so no new sandbox is placed on it (heartbeats keep the mark " +
			"until `hearth host undrain`), then pauses its running sandboxes one by one. Paused " +
			"sandboxes resume on their next use on the same host: snapshots do not move between " +
			"hosts yet. Sandboxes that cannot be paused keep running and are listed.\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			var res hearth.DrainResult
			err := f.call(cmd, "Draining "+args[0], func(ctx context.Context, c *hearth.Client) (err error) {
				res, err = c.DrainHost(ctx, args[0])
				return err
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s is draining: %d sandboxes paused, %d could not be\n", res.HostID, len(res.Paused), len(res.Failed))
			for _, fl := range res.Failed {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s: %s\n", fl.SandboxID, fl.Error)
			}
			return nil
		}),
	}
}

func newHostUndrainCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "undrain ID",
		Short: "Let a drained host take new sandboxes again",
		Args:  cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			return f.call(cmd, "", func(ctx context.Context, c *hearth.Client) error {
				return c.UndrainHost(ctx, args[0])
			})
		}),
	}
}
