package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// cliClientFlags are the flags every command that talks to Hearth's API takes.
type cliClientFlags struct {
	apiURL, sandboxURL, apiKey string
	json                       bool
	requestTimeout             time.Duration
}

func (f *cliClientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.apiURL, "api-url", "", "REST API URL (default $HEARTH_API_URL, $E2B_API_URL, else "+hearth.DefaultAPIURL+")")
	fs.StringVar(&f.sandboxURL, "sandbox-url", "", "sandbox proxy URL (default $HEARTH_SANDBOX_URL, $E2B_SANDBOX_URL, else "+hearth.DefaultSandboxURL+")")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (default $HEARTH_API_KEY, $E2B_API_KEY, else the key hearth dev saved in $HEARTH_DATA_DIR/api-key)")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of text")
	fs.DurationVar(&f.requestTimeout, "request-timeout", 5*time.Minute, "give up on an API request after this long")
}

// client builds the SDK client: flags win over the environment, which wins over the key
// file hearth dev writes.
func (f *cliClientFlags) client() (*hearth.Client, error) {
	c := hearth.NewClient()
	if f.apiURL != "" {
		c.APIURL = f.apiURL
	}
	if f.sandboxURL != "" {
		c.SandboxURL = f.sandboxURL
	}
	if f.apiKey != "" {
		c.APIKey = f.apiKey
	}
	if c.APIKey == "" {
		key, err := savedAPIKey()
		if err != nil {
			return nil, err
		}
		c.APIKey = key
	}
	return c, nil
}

// savedAPIKey reads the key hearth dev saves in its data directory.
func savedAPIKey() (string, error) {
	dir := os.Getenv("HEARTH_DATA_DIR")
	if dir == "" {
		dir = templateDefaultDataDir
	}
	path := filepath.Join(dir, "api-key")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", usagef("no API key: pass --api-key or set HEARTH_API_KEY (or E2B_API_KEY); "+
			"`hearth dev` prints one on start and saves it to %s (set HEARTH_DATA_DIR if it uses another data directory)", path)
	case err != nil:
		return "", usagef("no API key given and cannot read %s: %v; pass --api-key or set HEARTH_API_KEY", path, err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", usagef("%s is empty; pass --api-key or set HEARTH_API_KEY", path)
	}
	return key, nil
}

// signalContext is cancelled with errInterrupted on Ctrl-C or SIGTERM.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel(errInterrupted)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// requestContext bounds one API operation by --request-timeout and Ctrl-C.
func (f *cliClientFlags) requestContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signalContext(parent)
	ctx, cancel := context.WithTimeoutCause(ctx, f.requestTimeout,
		fmt.Errorf("no answer within --request-timeout %v: %w", f.requestTimeout, context.DeadlineExceeded))
	return ctx, func() { cancel(); stop() }
}

// call is the preamble of a command that makes one API request: it builds the client, bounds
// op by --request-timeout and Ctrl-C, and, when doing is not empty, shows it as progress on a
// terminal. The error op returns because the request was cut short says why.
func (f *cliClientFlags) call(cmd *cobra.Command, doing string, op func(context.Context, *hearth.Client) error) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := f.requestContext(cmd.Context())
	defer cancel()
	done := func(error) {}
	if doing != "" {
		done = progress(cmd.ErrOrStderr(), doing)
	}
	err = ctxErr(ctx, op(ctx, c))
	done(err)
	return err
}

// ctxErr prefers the context's cause (interrupted, request timeout) over the error an
// operation returned because of it.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
	}
	return err
}
