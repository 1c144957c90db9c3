package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// runAPITemplateBuild builds template args[0] through the control plane's API, printing the
// build's log to stderr as it comes.
func runAPITemplateBuild(cmd *cobra.Command, f templateBuildFlags, args []string) error {
	b, err := f.recipe(args)
	if err != nil {
		return err
	}
	c, err := f.api.client()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, f.timeout,
		fmt.Errorf("not finished within --timeout %v (raise it to wait longer)", f.timeout))
	defer cancel()

	stderr, stdout := cmd.ErrOrStderr(), cmd.OutOrStdout()
	start := time.Now()
	var req hearth.TemplateBuildRequested
	st, err := c.BuildTemplate(ctx, b, hearth.BuildTemplateOptions{
		OnRequested: func(r hearth.TemplateBuildRequested) {
			req = r
			fmt.Fprintf(stderr, "Template created with ID: %s, Build ID: %s\n", r.TemplateID, r.BuildID)
		},
		OnUpload: func(step int, src string, uploaded bool) {
			if uploaded {
				fmt.Fprintf(stderr, "Uploaded '%s' (step %d)\n", src, step)
			} else {
				fmt.Fprintf(stderr, "Skipping upload of '%s' (step %d), already cached\n", src, step)
			}
		},
		OnLog: func(e hearth.BuildLogEntry) { printBuildLog(stderr, e) },
	})
	if err != nil && ctx.Err() != nil {
		// Stopped by Ctrl-C or --timeout: say so, and which build goes on without us.
		err = context.Cause(ctx)
		if req.BuildID != "" {
			stopped := fmt.Sprintf("stopped following build %s of template %s (it goes on on the server)", req.BuildID, req.TemplateID)
			if errors.Is(err, errInterrupted) {
				fmt.Fprintln(stderr, stopped) // exit 130 prints "interrupted" alone
			} else {
				err = fmt.Errorf("%s: %w", stopped, err)
			}
		}
	}
	if f.api.json && st.Status != "" {
		if jerr := writeJSON(stdout, st); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	if !f.api.json {
		fmt.Fprintf(stdout, "template %s ready: ID %s, build %s, in %s\n", b.Name, st.TemplateID, st.BuildID, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}

// printBuildLog writes one log entry as a line; warnings and errors say so.
func printBuildLog(w io.Writer, e hearth.BuildLogEntry) {
	msg := strings.TrimRight(e.Message, "\n")
	switch e.Level {
	case "warn", "error":
		fmt.Fprintf(w, "%s: %s\n", strings.ToUpper(e.Level), msg)
	default:
		fmt.Fprintln(w, msg)
	}
}

// recipe turns the flags into the build: a Dockerfile's steps (with --from or --image in
// place of its FROM), then the --run commands as root, then the start command.
func (f templateBuildFlags) recipe(args []string) (hearth.TemplateBuild, error) {
	var b hearth.TemplateBuild
	if f.from != "" && f.image != "" {
		return b, usagef("give --from or --image, not both")
	}
	if f.image == "" && (f.dockerfile == "" || f.from != "") {
		// Nothing is pulled: credentials given as flags are a mistake, from the environment not.
		if f.registryGiven {
			return b, usagef("--registry-username and --registry-password are for pulling --image (or a Dockerfile's FROM)")
		}
		f.registryUser, f.registryPass = "", ""
	}
	if (f.registryUser == "") != (f.registryPass == "") {
		return b, usagef("--registry-username and --registry-password go together")
	}
	contextDir := "."
	if f.dockerfile != "" {
		content, err := os.ReadFile(f.dockerfile)
		if err != nil {
			return b, usagef("-f: %v", err)
		}
		if b, err = hearth.FromDockerfile(string(content)); err != nil {
			return b, usagef("%s: %v", f.dockerfile, err)
		}
		contextDir = filepath.Dir(f.dockerfile)
	} else if len(args) > 1 {
		return b, usagef("a CONTEXT-DIR is for the COPY and ADD of a Dockerfile (-f)")
	}
	if len(args) > 1 {
		contextDir = args[1]
	}
	if fi, err := os.Stat(contextDir); err != nil || !fi.IsDir() {
		return b, usagef("build context %s is not a directory", contextDir)
	}
	switch {
	case f.from != "":
		b.FromTemplate, b.FromImage = f.from, ""
	case f.image != "":
		b.FromTemplate, b.FromImage = "", f.image
	}
	if f.registryUser != "" {
		b.Registry = &hearth.RegistryAuth{Username: f.registryUser, Password: f.registryPass}
	}
	for _, r := range f.run {
		if strings.TrimSpace(r) == "" {
			return b, usagef("--run: empty command")
		}
		b.Steps = append(b.Steps, hearth.TemplateStep{Type: "RUN", Args: []string{r, "root"}})
	}
	if f.startCmd != "" {
		b.StartCmd, b.ReadyCmd = f.startCmd, ""
	}
	if f.readyCmd != "" {
		if b.StartCmd == "" {
			return b, usagef("--ready-cmd needs a start command (--start-cmd, or a Dockerfile's CMD or ENTRYPOINT)")
		}
		b.ReadyCmd = f.readyCmd
	}
	if f.cpus < 0 || f.memoryMB < 0 {
		return b, usagef("--cpu and --memory-mb must be positive")
	}
	b.Name, b.Tags, b.CPUCount, b.MemoryMB, b.ContextDir = args[0], f.tags, f.cpus, f.memoryMB, contextDir
	return b, nil
}
