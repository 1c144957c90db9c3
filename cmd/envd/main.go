// Command envd is the daemon inside every Hearth sandbox: it runs processes and PTYs, serves
// the filesystem and file transfers, and forwards localhost-only servers, speaking E2B's envd
// protocol so the E2B SDKs work unchanged. It also runs directly on a Linux host for
// development and tests: `envd --addr 127.0.0.1:49983`.
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
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/envd"
	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/ports"
	"github.com/hearthsh/hearth/internal/envd/sudo"
)

func main() {
	// The sandbox's /usr/bin/sudo is a link to envd (see package sudo): a set-user-ID sudo
	// cannot work under gVisor.
	switch filepath.Base(os.Args[0]) {
	case "sudo":
		os.Exit(sudo.Main(os.Args[1:], envd.Version))
	case "sudoedit": // Debian's sudoedit is a link to sudo
		fmt.Fprintln(os.Stderr, "sudoedit: not supported in Hearth sandboxes: edit as root with sudo EDITOR FILE")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

func run() error {
	pid1 := os.Getpid() == 1
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	addr := fs.String("addr", fmt.Sprintf("0.0.0.0:%d", envd.Port), "address to listen on")
	defaultUser := fs.String("default-user", "", `user for requests that name none (default "user" when it exists, else the user envd runs as)`)
	reap := fs.Bool("reap", pid1, "reap orphaned processes (default on when envd is PID 1)")
	forward := fs.Bool("port-forward", pid1, "forward servers listening on localhost to the sandbox's external addresses (default on when envd is PID 1; never turn it on on a shared host)")
	hostSocket := fs.String("host-socket", "", "also serve on this Unix socket path (in a directory the host shares with the sandbox; POST /freeze closes it for a snapshot, POST /thaw reopens it)")
	sudoSocket := fs.String("sudo-socket", "", `serve sudo requests on this Unix socket inside the sandbox (default `+sudo.SocketPath+` when envd is PID 1; never in a directory the host shares)`)
	sudoGroup := fs.String("sudo-group", sudo.DefaultGroup, "group whose members may use sudo (root always may)")
	setClock := fs.Bool("set-clock", false, "let POST /init set the system clock (VM guests)")
	stall := fs.Duration("stall-timeout", 10*time.Second, "cut off an output stream whose client has not read for this long")
	verbose := fs.Bool("verbose", false, "log debug messages")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: envd [flags]\n\nenvd %s serves E2B's envd protocol on one port.\n\nFlags:\n", envd.Version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *version {
		fmt.Println(envd.Version)
		return nil
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	user := *defaultUser
	if user == "" {
		user = "user"
		if _, err := identity.Lookup(user); err != nil {
			cur, err := identity.Current()
			if err != nil {
				return err
			}
			user = cur.Name
		}
	}
	if _, err := identity.Lookup(user); err != nil {
		return fmt.Errorf("--default-user: %w", err)
	}

	// Requests as other users fail closed when this fails; say why once, at start-up.
	if err := identity.Verify(); err != nil {
		log.Error("envd cannot act as other users; their file requests will be refused", "err", err)
	}

	if *sudoSocket == "" && pid1 {
		*sudoSocket = sudo.SocketPath
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	srv := envd.NewServer(envd.Config{Log: log, DefaultUser: user, Reap: *reap, SetClock: *setClock, StallTimeout: *stall, HostSocket: *hostSocket,
		SudoSocket: *sudoSocket, SudoGroup: *sudoGroup})
	defer srv.Close()
	hs := envd.NewHTTPServer(srv)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	if err := srv.OpenHostSocket(); err != nil {
		return err
	}
	// Without sudo the sandbox still works (commands can run as root directly), so a
	// failure is logged, not fatal.
	if err := srv.OpenSudo(); err != nil {
		log.Error("sudo unavailable in this sandbox", "err", err)
	}
	if *forward {
		go ports.New(log).Run(ctx)
	}
	log.Info("envd listening", "addr", ln.Addr().String(), "version", envd.Version, "default_user", user, "reap", *reap, "port_forward", *forward)

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
