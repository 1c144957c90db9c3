package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

// cliEnv is what CLI tests run against: the strict fake REST API and, for commands that reach
// into sandboxes, a real envd standing in for every sandbox.
type cliEnv struct {
	api  *hearthtest.FakeAPI
	envd *hearthtest.Envd
}

// newCLIEnv points the CLI at a fresh fake API (and a real envd when withEnvd) through the
// environment, as a user's shell would.
func newCLIEnv(t *testing.T, withEnvd bool) *cliEnv {
	t.Helper()
	e := &cliEnv{api: hearthtest.NewFakeAPI(t)}
	sandboxURL := "http://127.0.0.1:1"
	if withEnvd {
		e.envd = startTestEnvd(t)
		sandboxURL = e.envd.URL
	}
	for _, k := range []string{"E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"} {
		t.Setenv(k, "")
	}
	t.Setenv("HEARTH_API_URL", e.api.URL)
	t.Setenv("HEARTH_SANDBOX_URL", sandboxURL)
	t.Setenv("HEARTH_API_KEY", e.api.APIKey)
	t.Setenv("HEARTH_DATA_DIR", t.TempDir())
	return e
}

var envdBuild struct {
	once sync.Once
	path string
	err  error
}

// startTestEnvd runs a real envd for one test. The binary is built once per test process,
// into a fixed directory so repeated runs do not fill the temp dir.
func startTestEnvd(t *testing.T) *hearthtest.Envd {
	t.Helper()
	envdBuild.once.Do(func() {
		dir := filepath.Join(os.TempDir(), "hearth-cli-test-envd")
		if envdBuild.err = os.MkdirAll(dir, 0o755); envdBuild.err == nil {
			envdBuild.path, envdBuild.err = hearthtest.BuildEnvd(dir)
		}
	})
	if envdBuild.err != nil {
		t.Fatal(envdBuild.err)
	}
	e, err := hearthtest.StartEnvd(envdBuild.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

// cliResult is what a user sees from one invocation.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs `hearth ARGS...` in-process with stdin and returns its output and exit code, as
// main and cliExit would produce it.
func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	freshCLICommands()
	var out, errb bytes.Buffer
	rootCmd.SetArgs(args)
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	rootCmd.SetIn(strings.NewReader(stdin))
	defer func() {
		rootCmd.SetArgs(nil)
		rootCmd.SetOut(nil)
		rootCmd.SetErr(nil)
		rootCmd.SetIn(nil)
	}()
	code := -1
	saved := cliExit
	cliExit = func(c int) {
		if code == -1 {
			code = c
		}
	}
	defer func() { cliExit = saved }()
	err := rootCmd.ExecuteContext(context.Background())
	if code == -1 {
		code = 0
		if err != nil { // main prints the error and exits 1
			code = 1
			errb.WriteString("hearth: " + err.Error() + "\n")
		}
	}
	return cliResult{out.String(), errb.String(), code}
}

// freshCLICommands replaces the CLI commands with new instances, so flag values from one run
// do not leak into the next.
func freshCLICommands() {
	if old := findCommand(rootCmd, "sandbox"); old != nil {
		rootCmd.RemoveCommand(old)
	}
	rootCmd.AddCommand(newSandboxCmd())
	for name, mk := range map[string]func() *cobra.Command{"team": newTeamCmd, "key": newKeyCmd, "host": newHostCmd} {
		if old := findCommand(rootCmd, name); old != nil {
			rootCmd.RemoveCommand(old)
		}
		rootCmd.AddCommand(mk())
	}
	tmpl := findCommand(rootCmd, "template")
	if ls := findCommand(tmpl, "ls"); ls != nil {
		tmpl.RemoveCommand(ls)
	}
	tmpl.AddCommand(newTemplateLsCmd())
	if b := findCommand(tmpl, "build"); b != nil {
		tmpl.RemoveCommand(b)
	}
	tmpl.AddCommand(newTemplateBuildCmd())
}

// expect checks an invocation's exit code and that its outputs contain the given texts.
func (r cliResult) expect(t *testing.T, code int, stdoutHas, stderrHas string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, stdoutHas) {
		t.Errorf("stdout %q does not contain %q", r.stdout, stdoutHas)
	}
	if !strings.Contains(r.stderr, stderrHas) {
		t.Errorf("stderr %q does not contain %q", r.stderr, stderrHas)
	}
}
