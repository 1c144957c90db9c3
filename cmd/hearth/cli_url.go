package main

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/internal/proxy"
)

func newSandboxURLCmd(f *cliClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "url ID PORT",
		Short: "Print the URL to open a sandbox port in a browser",
		Long: "Prints http(s)://PORT-ID.<domain>/ when that name resolves from this machine (a " +
			".localhost domain does when the sandbox URL is a loopback one), each port then being " +
			"its own browser origin; else the path form <sandbox-url>/proxy/ID/PORT/, which every " +
			"path-form preview shares one origin with (docs/security.md).\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(2)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			port, err := strconv.ParseUint(args[1], 10, 16)
			if err != nil || port == 0 {
				return usagef("PORT %q: want a TCP port, 1 to 65535", args[1])
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			base, err := url.Parse(c.SandboxURL)
			if err != nil || base.Host == "" {
				return usagef("--sandbox-url %q is not a URL", c.SandboxURL)
			}
			sb, err := f.openRunning(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			proxyPort, _ := strconv.Atoi(base.Port())
			if proxyPort == 0 && base.Scheme == "https" {
				proxyPort = 443
			} else if proxyPort == 0 {
				proxyPort = 80
			}
			u, _ := proxy.PreviewURL(cmd.Context(), proxy.PreviewTarget{Scheme: base.Scheme, Domain: sb.Info().Domain,
				ClientHost: base.Hostname(), ProxyPort: proxyPort}, sb.ID, uint16(port))
			fmt.Fprintln(cmd.OutOrStdout(), u)
			return nil
		}),
	}
}
