package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/template"
	hearth "github.com/hearthsh/hearth/sdk/go"
	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

// Network slots of this package's tests with a real agent.
const (
	cliTestSlotPrefix = "htb"
	cliTestPool       = "10.203.0.0/16"
)

// TestTemplateBuildThroughAPI: `hearth template build` against a real control plane and a
// real gVisor agent builds from --from base with --run, and from a Dockerfile whose COPY
// brings a context directory (modes and symlinks kept) that a sandbox of it then sees; a
// failing RUN exits 1 naming its step; --json prints the final status.
func TestTemplateBuildThroughAPI(t *testing.T) {
	devEnv(t)

	// --from base with --run; --json prints the final status.
	r := runCLI(t, "", "template", "build", "cli-run", "--from", "base", "--run", "echo made-by-run > /opt/marker", "--json")
	r.expect(t, 0, `"status": "ready"`, "[builder 1/1] RUN echo made-by-run > /opt/marker")
	if strings.Count(r.stderr, "[builder 1/1]") != 1 {
		t.Errorf("a log line repeated or missing:\n%s", r.stderr)
	}
	var st hearth.TemplateBuildStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.TemplateID == "" {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	sandboxSees(t, "cli-run", "cat /opt/marker", "made-by-run\n")

	// A Dockerfile with COPY of a context directory.
	ctxDir := t.TempDir()
	app := filepath.Join(ctxDir, "app")
	os.MkdirAll(filepath.Join(app, "sub"), 0o755)
	os.WriteFile(filepath.Join(app, "hello.txt"), []byte("hello from the context\n"), 0o644)
	os.WriteFile(filepath.Join(app, "sub", "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)
	os.Symlink("hello.txt", filepath.Join(app, "link"))
	df := filepath.Join(t.TempDir(), "Dockerfile")
	os.WriteFile(df, []byte("FROM e2bdev/base\nCOPY app /app\nRUN test -x /app/sub/run.sh\nWORKDIR /app\n"), 0o644)
	r = runCLI(t, "", "template", "build", "cli-dockerfile", "-f", df, ctxDir)
	r.expect(t, 0, "template cli-dockerfile ready", "Uploaded 'app' (step 3)")
	sandboxSees(t, "cli-dockerfile", "cat /app/hello.txt && readlink /app/link && stat -c %a /app/sub/run.sh && /app/sub/run.sh && pwd",
		"hello from the context\nhello.txt\n755\nran\n/app\n")

	// A failing RUN names its step, with the reason.
	r = runCLI(t, "", "template", "build", "cli-fail", "--from", "base", "--run", "true", "--run", "echo about to fail && exit 3")
	r.expect(t, 1, "", "failed in step 2: failed to run command 'echo about to fail && exit 3'")
	if !strings.Contains(r.stderr, "about to fail") {
		t.Errorf("the failing step's output is not in the log:\n%s", r.stderr)
	}

	// --timeout stops following a build that is still running, saying which one it was.
	start := time.Now()
	r = runCLI(t, "", "template", "build", "cli-slow", "--from", "base", "--run", "sleep 60", "--timeout", "3s")
	r.expect(t, 1, "", "not finished within --timeout 3s")
	if !strings.Contains(r.stderr, "stopped following build ") || time.Since(start) > 20*time.Second {
		t.Errorf("after %v: %s", time.Since(start), r.stderr)
	}

	// Ctrl-C likewise, with exit code 130. The CLI has its signal handler in place long
	// before the signal comes: it installs it before its first request.
	timer := time.AfterFunc(2*time.Second, func() { syscall.Kill(os.Getpid(), syscall.SIGINT) })
	defer timer.Stop()
	r = runCLI(t, "", "template", "build", "cli-slow", "--from", "base", "--run", "sleep 60")
	r.expect(t, exitInterrupted, "", "stopped following build ")
	if !strings.Contains(r.stderr, "hearth template build: interrupted") {
		t.Errorf("interrupted build: %s", r.stderr)
	}
}

// TestTemplateBuildFlags: mistakes in how a build is asked for are usage errors (exit 2)
// before anything is sent.
func TestTemplateBuildFlags(t *testing.T) {
	newCLIEnv(t, false)
	df := filepath.Join(t.TempDir(), "Dockerfile")
	os.WriteFile(df, []byte("FROM e2bdev/base\nHEALTHCHECK CMD true\n"), 0o644)
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"local flag on an API build", []string{"template", "build", "x", "--envd", "/bin/envd"}, "--envd is only for local builds: add --local"},
		{"API flag on a local build", []string{"template", "build", "x", "--local", "--start-cmd", "srv"}, "--start-cmd is only for builds through the API"},
		{"from and image", []string{"template", "build", "x", "--from", "base", "--image", "python:3"}, "give --from or --image, not both"},
		{"ready without start", []string{"template", "build", "x", "--ready-cmd", "true"}, "--ready-cmd needs a start command"},
		{"context without Dockerfile", []string{"template", "build", "x", t.TempDir()}, "a CONTEXT-DIR is for the COPY and ADD of a Dockerfile"},
		{"unsupported instruction", []string{"template", "build", "x", "-f", df}, "line 2: HEALTHCHECK: not supported"},
		{"missing Dockerfile", []string{"template", "build", "x", "-f", "/nonexistent/Dockerfile"}, "-f: open /nonexistent/Dockerfile"},
		{"password alone", []string{"template", "build", "x", "--image", "a/b", "--registry-password", "p"}, "go together"},
		{"credentials with nothing to pull", []string{"template", "build", "x", "--from", "base", "--registry-username", "u", "--registry-password", "p"}, "are for pulling --image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runCLI(t, "", tt.args...).expect(t, exitUsage, "", tt.stderr)
		})
	}
}

// sandboxSees creates a sandbox of tmpl with the CLI, runs cmd in it and checks its output.
func sandboxSees(t *testing.T, tmpl, cmd, want string) {
	t.Helper()
	r := runCLI(t, "", "sandbox", "create", "--template", tmpl, "--timeout", "2m")
	r.expect(t, 0, "", "")
	id := strings.TrimSpace(r.stdout)
	if id == "" {
		t.Fatalf("no sandbox ID from create: %+v", r)
	}
	defer runCLI(t, "", "sandbox", "kill", id)
	r = runCLI(t, "", "sandbox", "exec", id, "--", "bash", "-c", cmd)
	if r.code != 0 || r.stdout != want {
		t.Errorf("in a sandbox of %s, %q gave %q (exit %d, stderr %q), want %q", tmpl, cmd, r.stdout, r.code, r.stderr, want)
	}
}

// devEnv runs a control plane and one gVisor agent in this process, as hearth dev does, on
// free loopback ports with this package's network-slot prefix and pool, and points the CLI
// at it. Its data dir is seeded with hard links from HEARTH_TEST_DATA's base template.
func devEnv(t *testing.T) {
	t.Helper()
	devEnvWith(t, devSetup{data: "cli-build-test", prefix: cliTestSlotPrefix, pool: cliTestPool})
}

// devSetup is what keeps one devEnvWith apart from another: the data dir (under
// HEARTH_TEST_DATA), the agent's network-slot prefix and address pool; and its --warm-pool.
type devSetup struct {
	data, prefix, pool string
	warmPool           string
}

// devEnvWith is devEnv with setup d; it returns the path of hearth dev's log.
func devEnvWith(t *testing.T, d devSetup) string {
	t.Helper()
	skip := t.Skip
	if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
		skip = t.Fatal
	}
	if os.Geteuid() != 0 {
		skip("skipping: a real agent needs root")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	runsc := filepath.Join(root, "bin", "runsc")
	if _, err := os.Stat(runsc); err != nil {
		skip("skipping: no bin/runsc (make runsc)")
	}
	shared := os.Getenv("HEARTH_TEST_DATA")
	if shared == "" {
		shared = "/var/lib/hearth-test"
	}
	if _, err := template.Open(shared, "base"); err != nil {
		skip("skipping: no base template in " + shared + " (make test-base)")
	}
	data := filepath.Join(shared, d.data)
	for _, sub := range []string{"hearth.db", "hearth.db-wal", "hearth.db-shm", "sandboxes", "api-key", "build-files"} {
		os.RemoveAll(filepath.Join(data, sub))
	}
	// Templates of earlier runs go; base is linked again when it is not the shared build.
	ents, _ := os.ReadDir(filepath.Join(data, "templates"))
	for _, e := range ents {
		if e.Name() != "base" {
			os.RemoveAll(filepath.Join(data, "templates", e.Name()))
		}
	}
	want, _ := template.Open(shared, "base")
	if got, err := template.Open(data, "base"); err != nil || got.Meta.BuildID != want.Meta.BuildID {
		os.RemoveAll(template.Dir(data, "base"))
		os.MkdirAll(filepath.Join(data, "templates"), 0o755)
		tmp := filepath.Join(data, "templates", ".seed")
		os.RemoveAll(tmp)
		if out, err := exec.Command("cp", "-al", template.Dir(shared, "base"), tmp).CombinedOutput(); err != nil {
			t.Fatalf("seed: %v: %s", err, out)
		}
		if err := os.Rename(tmp, template.Dir(data, "base")); err != nil {
			t.Fatal(err)
		}
	}
	envdDir := filepath.Join(os.TempDir(), "hearth-cli-test-envd")
	os.MkdirAll(envdDir, 0o755)
	envd, err := hearthtest.BuildEnvd(envdDir)
	if err != nil {
		t.Fatal(err)
	}

	ports := freeLoopbackAddrs(t, 4)
	key := cp.NewAPIKey()
	c := serverConfig{DataDir: data, APIAddr: ports[0], ProxyAddr: ports[1], APIKey: key, AgentToken: hostreg.NewToken(),
		DefaultTimeout: 5 * time.Minute}
	a := agentConfig{RPCAddr: ports[2], ProxyAddr: ports[3], Runtime: "gvisor", Runsc: runsc, PoolCIDR: d.pool,
		SlotPrefix: d.prefix, DefaultDiskMiB: defaultDiskMiB, WarmPool: d.warmPool, WarmPoolCPUs: 2, WarmPoolMemoryMiB: 512}
	logf, err := os.Create(filepath.Join(t.TempDir(), "dev.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, c, a, envd, slog.New(slog.NewTextHandler(logf, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("hearth dev did not stop within a minute")
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("hearth dev log (last 8 KiB):\n%s", tail(b, 8<<10))
		}
		logf.Close()
	})

	for _, k := range []string{"E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"} {
		t.Setenv(k, "")
	}
	t.Setenv("HEARTH_API_URL", "http://"+ports[0])
	t.Setenv("HEARTH_SANDBOX_URL", "http://"+ports[1])
	t.Setenv("HEARTH_API_KEY", key)
	client := hearth.NewClient()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case err := <-done:
			t.Fatalf("hearth dev ended: %v", err)
		default:
		}
		tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
		tmpls, err := client.ListTemplates(tctx)
		tcancel()
		if err == nil && hasTemplate(tmpls, "base") {
			return logf.Name()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not register with the base template within 3 minutes: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func hasTemplate(ts []hearth.Template, id string) bool {
	for _, t := range ts {
		if t.TemplateID == id {
			return true
		}
	}
	return false
}

// freeLoopbackAddrs returns n distinct free loopback addresses, all held open until all are
// chosen so none is handed out twice.
func freeLoopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	var (
		lns   []net.Listener
		addrs []string
	)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
