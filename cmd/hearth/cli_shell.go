package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func newSandboxShellCmd(f *cliClientFlags) *cobra.Command {
	var user, cwd string
	cmd := &cobra.Command{
		Use:   "shell ID",
		Short: "Open an interactive shell in a sandbox",
		Long: "Opens a login bash on a terminal in the sandbox. The local terminal is put in raw mode " +
			"(Ctrl-C goes to the remote shell) and restored on exit; window size changes follow. " +
			"Exits with the shell's exit code. Needs a terminal on stdin and stdout; use exec otherwise.\n" + exitCodesHelp,
		Args: cliArgs(cobra.ExactArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			inFd, inTTY := terminalFd(cmd.InOrStdin())
			outFd, outTTY := terminalFd(cmd.OutOrStdout())
			if !inTTY || !outTTY {
				return usagef("shell needs a terminal on stdin and stdout; use `hearth sandbox exec %s -- CMD` instead", args[0])
			}
			sb, err := f.openRunning(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			code, err := runShell(cmd.Context(), sb, inFd, outFd, cmd.InOrStdin(), cmd.OutOrStdout(), &hearth.PTYOptions{User: user, Cwd: cwd})
			if err != nil {
				return err
			}
			if code != 0 {
				return &remoteExit{code: max(code, exitError)}
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "log in as this user (default: the sandbox's default user)")
	cmd.Flags().StringVar(&cwd, "cwd", "", "start in this directory (default: the user's home)")
	return cmd
}

// runShell connects the local terminal to a remote PTY until the shell exits, and returns its
// exit code. The terminal is restored however it ends.
func runShell(parent context.Context, sb *hearth.Sandbox, inFd, outFd int, in io.Reader, out io.Writer, opts *hearth.PTYOptions) (int, error) {
	cols, rows, err := term.GetSize(outFd)
	if err != nil {
		cols, rows = 80, 24
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	h, err := sb.PTY.Create(ctx, hearth.PTYSize{Cols: uint32(cols), Rows: uint32(rows)}, func(b []byte) { _, _ = out.Write(b) }, opts)
	if err != nil {
		return 0, err
	}
	state, err := term.MakeRaw(inFd)
	if err != nil {
		_ = h.Kill(ctx)
		return 0, err
	}
	defer term.Restore(inFd, state)

	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for {
			select {
			case <-winch:
				if c, r, err := term.GetSize(outFd); err == nil {
					_ = h.Resize(ctx, hearth.PTYSize{Cols: uint32(c), Rows: uint32(r)})
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if n > 0 && h.SendInput(ctx, append([]byte(nil), buf[:n]...)) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return h.Wait(ctx)
}
