package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// init adds `ls` to the `template` command that template.go registers. Go runs the init
// functions of a package's files in the order of their file names as presented to the
// compiler (sorted), so template.go's init has run and the command exists by now.
func init() {
	parent := findCommand(rootCmd, "template")
	if parent == nil {
		// template.go registers this; should it ever not, `template ls` still works.
		parent = &cobra.Command{Use: "template", Short: "Build and inspect sandbox templates"}
		rootCmd.AddCommand(parent)
	}
	parent.AddCommand(newTemplateLsCmd())
}

func findCommand(parent *cobra.Command, name string) *cobra.Command {
	for _, c := range parent.Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

func newTemplateLsCmd() *cobra.Command {
	var f cliClientFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the templates sandboxes can be created from",
		Long:    "Lists templates from Hearth's API as a table (or a JSON array with --json).\n" + exitCodesHelp,
		Args:    cliArgs(cobra.NoArgs),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			var tmpls []hearth.Template
			err := f.call(cmd, "", func(ctx context.Context, c *hearth.Client) (err error) {
				tmpls, err = c.ListTemplates(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), tmpls)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tALIASES\tSTATUS\tCPU\tMEMORY\tDISK\tENVD\tUPDATED")
			for _, t := range tmpls {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%d MiB\t%s\t%s\n", t.TemplateID, strings.Join(t.Aliases, ","),
					t.BuildStatus, t.CPUCount, t.MemoryMB, t.DiskSizeMB, t.EnvdVersion, t.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	f.register(cmd.Flags())
	cmd.Flags().Lookup("sandbox-url").Hidden = true // templates are only REST
	cmd.SetFlagErrorFunc(cliFlagError)
	return cmd
}
