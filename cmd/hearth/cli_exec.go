package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func newSandboxExecCmd(f *cliClientFlags) *cobra.Command {
	var (
		user, cwd string
		envs      []string
		stdin     bool
	)
	cmd := &cobra.Command{
		Use:   "exec ID [flags] -- CMD [ARGS...]",
		Short: "Run a command in a sandbox, streaming its output",
		Long: "Runs CMD with ARGS in the sandbox, as a login bash would (PATH and the profile apply), " +
			"streaming its stdout and stderr, and exits with its exit code (128+N when signal N " +
			"killed it). Arguments are passed as they are, not through a shell: to use pipes or " +
			"variables, run `-- bash -c '...'`. Put -- before CMD when it has flags of its own. " +
			"Ctrl-C kills the command.\n" + exitCodesHelp,
		Args: cliArgs(cobra.MinimumNArgs(1)),
		RunE: cliRun(func(cmd *cobra.Command, args []string) error {
			id, argv := args[0], args[1:]
			if len(argv) == 0 {
				return usagef("no command given: hearth sandbox exec %s -- CMD [ARGS...]", id)
			}
			ev, err := parsePairs("env", envs)
			if err != nil {
				return err
			}
			sb, err := f.openRunning(cmd.Context(), id)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			opts := &hearth.CommandOptions{
				User: user, Cwd: cwd, Envs: ev, Stdin: stdin, NoCapture: true,
				Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
			}
			return execResult(ctx, runWithStdin(ctx, sb, shellJoin(argv), opts, cmd.InOrStdin()))
		}),
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "run as this user (default: the sandbox's default user)")
	cmd.Flags().StringVar(&cwd, "cwd", "", "working directory (default: the user's home)")
	cmd.Flags().StringArrayVarP(&envs, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	cmd.Flags().BoolVarP(&stdin, "stdin", "i", false, "send this command's stdin to the remote command")
	return cmd
}

// runWithStdin runs the command, feeding it in when opts.Stdin is set, and kills it when ctx
// ends first.
func runWithStdin(ctx context.Context, sb *hearth.Sandbox, command string, opts *hearth.CommandOptions, in io.Reader) error {
	if !opts.Stdin {
		_, err := sb.Commands.Run(ctx, command, opts)
		return err
	}
	h, err := sb.Commands.Start(ctx, command, opts)
	if err != nil {
		return err
	}
	go forwardStdin(ctx, h, in)
	_, err = h.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = h.Kill(kctx)
		cancel()
	}
	return err
}

// forwardStdin copies in to the command chunk by chunk, then closes its stdin.
func forwardStdin(ctx context.Context, h *hearth.CommandHandle, in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if h.SendStdin(ctx, append([]byte(nil), buf[:n]...)) != nil {
				return // the command is gone; Wait reports how it ended
			}
		}
		if err != nil {
			_ = h.CloseStdin(ctx)
			return
		}
	}
}

// execResult turns how the remote command ended into this process's exit.
func execResult(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var exit *hearth.CommandExitError
	if errors.As(err, &exit) {
		return &remoteExit{code: exitCodeOf(exit.CommandResult)}
	}
	return ctxErr(ctx, err)
}

// exitCodeOf is the shell's convention: the exit status, or 128+N for signal N.
func exitCodeOf(r hearth.CommandResult) int {
	if r.ExitCode >= 0 {
		return r.ExitCode
	}
	for num, name := range signalNames {
		if strings.HasPrefix(r.Status, "signal: "+name) {
			return 128 + num
		}
	}
	return exitError
}

// signalNames are Go's names for the signals that commonly end processes, as envd reports
// them in an end event's status ("signal: killed").
var signalNames = map[int]string{
	1: "hangup", 2: "interrupt", 3: "quit", 6: "aborted", 9: "killed", 11: "segmentation fault",
	13: "broken pipe", 15: "terminated",
}

// openRunning builds the client and opens sandbox id with it, refusing, with exit code 4, one
// that is not running.
func (f *cliClientFlags) openRunning(parent context.Context, id string) (*hearth.Sandbox, error) {
	c, err := f.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := f.requestContext(parent)
	defer cancel()
	sb, err := c.Open(ctx, id)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if sb.State() != hearth.StateRunning {
		return nil, &hearth.APIError{Status: 409, Op: "open sandbox " + id,
			Message: fmt.Sprintf("sandbox is %s; run `hearth sandbox resume %s` first", sb.State(), id)}
	}
	return sb, nil
}

// shellJoin quotes argv for bash so each argument arrives as it was given.
func shellJoin(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
