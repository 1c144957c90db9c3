package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// listenBoth opens the API and proxy listeners of a role, or neither.
func listenBoth(apiAddr, proxyAddr string) (net.Listener, net.Listener, error) {
	api, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", apiAddr, err)
	}
	px, err := net.Listen("tcp", proxyAddr)
	if err != nil {
		api.Close()
		return nil, nil, fmt.Errorf("listen %s: %w", proxyAddr, err)
	}
	return api, px, nil
}

// listenUnix listens on a Unix socket only root can connect to, replacing a stale one.
func listenUnix(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// serveUntil serves each server on its listener until ctx ends or one of them fails, then
// shuts them all down (10 s for open requests to finish).
func serveUntil(ctx context.Context, srvs []*http.Server, lns []net.Listener) error {
	errc := make(chan error, len(srvs))
	for i, s := range srvs {
		go func() { errc <- s.Serve(lns[i]) }()
	}
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range srvs {
		s.Shutdown(sctx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// newServer returns a server with the timeouts of DESIGN.md; h2c only for RPC.
func newServer(h http.Handler, h2c bool) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if h2c {
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 620 * time.Second}
}
