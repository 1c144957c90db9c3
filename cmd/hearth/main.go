// Command hearth is Hearth's single binary: the control plane, the host agent, the dev mode
// that runs both, and the CLI. Each subcommand lives in its own file and registers itself on
// rootCmd in an init function.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "hearth",
	Short:         "Hearth runs untrusted code in isolated, pausable sandboxes",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		os.Exit(1)
	}
}
