// Command codeinterp is Hearth's code-interpreter server, injected into code-interpreter
// templates: the API of E2B's code interpreter on port 49999 (see internal/codeinterp).
//
//	codeinterp [-addr 0.0.0.0:49999] [-cwd /home/user] [-python /usr/bin/python3] [-envd URL]
//	codeinterp -supervise ...   runs the server as a child and restarts it when it dies
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/codeinterp"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:49999", "listen address")
	cwd := flag.String("cwd", "/home/user", "working directory of contexts that name none")
	python := flag.String("python", "/usr/bin/python3", "python interpreter with ipykernel")
	envd := flag.String("envd", "http://127.0.0.1:49983", "envd URL, asked for the sandbox's environment variables (GET /envs); empty for none")
	supervise := flag.Bool("supervise", false, "run the server as a child process and restart it whenever it exits")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "codeinterp")
	slog.SetDefault(log)

	if *supervise {
		var args []string
		flag.Visit(func(f *flag.Flag) {
			if f.Name != "supervise" {
				args = append(args, "-"+f.Name+"="+f.Value.String())
			}
		})
		os.Exit(superviseServer(log, args))
	}
	if err := serve(log, *addr, *cwd, *python, *envd); err != nil {
		log.Error("code interpreter", "err", err)
		os.Exit(1)
	}
}

func serve(log *slog.Logger, addr, cwd, python, envd string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	runDir, err := os.MkdirTemp("", "hearth-codeinterp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	s, err := codeinterp.New(codeinterp.Config{DefaultCwd: cwd, Python: python, EnvdURL: envd, RunDir: runDir, Log: log})
	if err != nil {
		return err
	}
	defer s.Close()
	// Listen before the default context is ready: /health says 503 until then, so a ready
	// command polling it waits for the kernel, not for a refused connection.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 640 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		_ = srv.Close()
		return err
	}
	log.Info("ready", "took", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// superviseServer runs this binary without -supervise and starts it again a second after it
// exits, however it exits (E2B's template restarts its server on failure the same way). A
// SIGTERM or SIGINT is passed on to the server and ends the supervision.
func superviseServer(log *slog.Logger, args []string) int {
	self, err := os.Executable()
	if err != nil {
		log.Error("supervise", "err", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	for {
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Error("supervise: start server", "err", err)
		} else {
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				log.Warn("server exited: restarting it", "err", err)
			case sig := <-sigs:
				_ = cmd.Process.Signal(sig)
				<-exited
				return 0
			}
		}
		select {
		case <-time.After(time.Second):
		case <-sigs:
			return 0
		}
	}
}
