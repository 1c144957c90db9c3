package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/spf13/pflag"
)

// pprofFlag defines --pprof-listen (server, agent and dev).
func pprofFlag(f *pflag.FlagSet, v *string) {
	f.StringVar(v, "pprof-listen", "", "loopback address (e.g. 127.0.0.1:6060) to serve Go's profiler on, under /debug/pprof/; off when empty. "+
		"For performance work only: profiles show request paths and timings, so it refuses other addresses")
}

// checkPprofAddr refuses any address but a loopback one: the profiler has no authentication.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %q: want host:port on loopback, e.g. 127.0.0.1:6060: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--pprof-listen %q: the profiler has no authentication, so it listens only on a loopback address (127.0.0.1 or [::1])", addr)
	}
	return nil
}

// pprofHandler serves the net/http/pprof endpoints on a mux of their own, so nothing else
// (and no other listener) exposes them.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// startPprof listens on addr (checked by checkPprofAddr) and serves the profiler until ctx
// ends. An empty addr does nothing.
func startPprof(ctx context.Context, addr string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	if err := checkPprofAddr(addr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen: %w", err)
	}
	// No write timeout: a CPU profile or trace answers after its ?seconds= have passed.
	srv := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "err", err)
		}
	}()
	log.Warn("profiler on (--pprof-listen)", "listen", ln.Addr().String())
	return nil
}
