package hearthtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/cleanhome"
)

// BuildEnvd builds envd from this module's cmd/envd into dir and returns the binary's path.
// It builds with CGO_ENABLED=0, as templates do.
func BuildEnvd(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "envd")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/envd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build envd: %w\n%s", err, b)
	}
	return out, nil
}

// moduleRoot finds the module this file belongs to, so the build works from any test's
// working directory.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate module: no caller information")
	}
	cmd := exec.Command("go", "env", "GOMOD")
	cmd.Dir = filepath.Dir(file)
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("locate module: %s is not inside a module", cmd.Dir)
	}
	return filepath.Dir(gomod), nil
}

// Envd is an envd running as a child process on a loopback port.
type Envd struct {
	// URL is envd's base URL; use it as a client's SandboxURL.
	URL  string
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan error
	// cleanup removes what cleanhome.Command made: envd runs where root's home is empty,
	// so the commands' login shells do not read this host's dotfiles.
	cleanup func()
}

func (e *Envd) removeHome() {
	if e.cleanup != nil {
		e.cleanup()
	}
}

// StartEnvd runs the envd binary at path on a free loopback port with extra flags, and waits
// until it answers /health.
func StartEnvd(path string, flags ...string) (*Envd, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a port for envd: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := &Envd{URL: "http://" + addr, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	e.cmd, e.cleanup = cleanhome.Command(path, append([]string{"--addr", addr}, flags...)...)
	e.cmd.Stdout = e.logs
	e.cmd.Stderr = e.logs
	// envd's children get their own process group from envd; make sure a test run that is
	// killed does not leave envd behind.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		e.removeHome()
		return nil, fmt.Errorf("start envd: %w", err)
	}
	go func() { e.done <- e.cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return e, nil
			}
		}
		select {
		case err := <-e.done:
			e.removeHome()
			return nil, fmt.Errorf("envd exited before it was ready: %v\n%s", err, e.logs)
		case <-ctx.Done():
			e.Stop()
			return nil, fmt.Errorf("envd not ready on %s after 10 s\n%s", addr, e.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Init sends envd the POST /init a control plane sends when a sandbox starts, e.g. to set an
// access token: {"accessToken": token}.
func (e *Envd) Init(body string) error {
	resp, err := http.Post(e.URL+"/init", "application/json", strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("envd /init: status %s", resp.Status)
	}
	return nil
}

// Stop terminates envd and waits for it to exit.
func (e *Envd) Stop() {
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	e.removeHome()
}
