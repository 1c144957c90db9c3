// Package runtimetest gives runtime driver tests what they need on a real host: the runsc
// binary, a built base template with the current envd, and network slots (a netns plus a
// veth pair) made without internal/netslot, so driver tests stand on their own.
//
// Everything is cached under HEARTH_TEST_DATA (default /var/lib/hearth-test): the first run
// builds the template with debootstrap (about a minute), later runs only re-inject envd.
package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/template"
)

// Env is the prepared test environment.
type Env struct {
	RepoRoot string
	Runsc    string
	Envd     string
	DataDir  string
	Template runtime.Template
	// TemplateDir is the template's rootfs (also Template.RootFS).
	TemplateDir string
}

// ErrUnavailable wraps the reason the environment cannot be prepared on this host; tests
// skip on it and fail on any other error.
var ErrUnavailable = errors.New("runtime test environment unavailable")

// Setup prepares the environment: builds bin/runsc (scripts/build-runsc.sh, a no-op when
// current), bin/envd if missing, and the base template, within ctx.
//
// With HEARTH_REQUIRE_RUNTIME set (as `make test` does), an unavailable environment is an
// ordinary error, so tests fail instead of skipping.
func Setup(ctx context.Context, progress io.Writer) (*Env, error) {
	e, err := setup(ctx, progress)
	if err != nil && os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" && errors.Is(err, ErrUnavailable) {
		return nil, fmt.Errorf("HEARTH_REQUIRE_RUNTIME is set and the runtime test environment cannot be prepared: %s", err.Error())
	}
	return e, err
}

func setup(ctx context.Context, progress io.Writer) (*Env, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: needs root", ErrUnavailable)
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	e := &Env{RepoRoot: root, DataDir: os.Getenv("HEARTH_TEST_DATA")}
	if e.DataDir == "" {
		e.DataDir = "/var/lib/hearth-test"
	}
	e.Runsc = filepath.Join(root, "bin", "runsc")
	if err := run(ctx, root, progress, nil, filepath.Join(root, "scripts", "build-runsc.sh"), e.Runsc); err != nil {
		return nil, fmt.Errorf("%w: build runsc: %v", ErrUnavailable, err)
	}
	e.Envd = os.Getenv("HEARTH_TEST_ENVD")
	if e.Envd == "" {
		e.Envd = filepath.Join(root, "bin", "envd")
		if _, err := os.Stat(e.Envd); err != nil {
			if err := run(ctx, root, progress, []string{"CGO_ENABLED=0"}, "go", "build", "-o", e.Envd, "./cmd/envd"); err != nil {
				return nil, fmt.Errorf("%w: build envd: %v", ErrUnavailable, err)
			}
		}
	}
	t, err := template.Build(ctx, template.BuildOptions{
		DataDir: e.DataDir, Name: "base", EnvdPath: e.Envd, Progress: progress,
		Logger: slog.New(slog.NewTextHandler(progress, nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: build template: %v", ErrUnavailable, err)
	}
	e.Template = runtime.Template{Name: t.Name, RootFS: t.RootFS, Version: t.Version()}
	e.TemplateDir = t.RootFS
	return e, nil
}

func run(ctx context.Context, dir string, out io.Writer, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

// repoRoot walks up from the working directory (a package dir under go test) to go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
