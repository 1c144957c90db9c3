package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// Exit codes of the sandbox and template CLI commands, which scripts can rely on. Commands that
// run a remote program (exec, shell) exit with its code instead of exitOK.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitConflict    = 4
	exitInterrupted = 130
)

// exitCodesHelp is appended to every CLI command's help.
const exitCodesHelp = `
Exit codes: 0 success; 1 error; 2 usage error (bad arguments or flags, no API key);
3 sandbox (or template) not found; 4 the sandbox's state does not allow the operation
(e.g. pausing a paused sandbox); 130 interrupted.`

// cliExit ends the process. main.go exits 1 on any error, so commands that need another code
// exit here themselves; tests replace it to read the code.
var cliExit = os.Exit

// errExited is what a command returns after cliExit when cliExit returned (only in tests):
// the error has already been reported.
var errExited = errors.New("exited")

// usageError is a mistake in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// remoteExit carries a remote program's exit code out of exec and shell.
type remoteExit struct{ code int }

func (e *remoteExit) Error() string { return fmt.Sprintf("remote command exited with code %d", e.code) }

// classify maps an error to the exit code and the message to print ("" for none).
func classify(err error) (int, string) {
	var (
		usage  *usageError
		remote *remoteExit
	)
	switch {
	case errors.As(err, &remote):
		return remote.code, ""
	case errors.As(err, &usage):
		return exitUsage, usage.msg
	case errors.Is(err, errInterrupted):
		return exitInterrupted, "interrupted"
	case hearth.IsNotFound(err):
		return exitNotFound, err.Error()
	case hearth.IsConflict(err):
		return exitConflict, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return exitError, err.Error() + " (raise --request-timeout to wait longer)"
	case hearth.IsUnauthorized(err):
		return exitError, err.Error() + " (check --api-key or HEARTH_API_KEY)"
	}
	return exitError, err.Error()
}

// cliRun wraps a command's work: it reports the error on stderr prefixed with the command's
// path, then exits with the code classify gives it.
func cliRun(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		return cliFail(cmd, err)
	}
}

// cliFail reports err and exits with its code.
func cliFail(cmd *cobra.Command, err error) error {
	code, msg := classify(err)
	if msg != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", cmd.CommandPath(), msg)
	}
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(cmd.ErrOrStderr(), "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	cliExit(code)
	return errExited
}

// cliArgs turns cobra's argument check into a usage error (exit 2) instead of main's exit 1.
func cliArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return cliFail(cmd, usagef("%s", err.Error()))
		}
		return nil
	}
}

// cliFlagError makes a flag parsing error a usage error.
func cliFlagError(cmd *cobra.Command, err error) error {
	return cliFail(cmd, usagef("%s", err.Error()))
}

// errInterrupted is the cause of a context cancelled by Ctrl-C or SIGTERM.
var errInterrupted = errors.New("interrupted")

// parsePairs parses repeated K=V flags.
func parsePairs(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--%s %q: want KEY=VALUE", flag, p)
		}
		out[k] = v
	}
	return out, nil
}
