package envd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
)

// hostSocket serves envd on a Unix socket in a directory the host shares with the sandbox.
//
// Why: under gVisor every TCP connection of a sandbox goes through the sandbox's own network
// stack, which its workload shares and which root in the sandbox can reconfigure (remove the
// address, and envd's TCP port is gone). A host Unix socket (runsc --host-uds=create) is read
// and written by the sentry directly, off that path.
//
// gVisor cannot checkpoint a listening host socket, so the runtime driver closes it with
// POST /freeze before a snapshot and opens it again with POST /thaw after the restore (or
// after a snapshot that failed).
type hostSocket struct {
	path string
	h    http.Handler
	log  *slog.Logger

	mu sync.Mutex
	hs *http.Server // nil while closed
}

// open starts serving on the socket unless it already is. A file left at the path (the
// socket of before a snapshot) is removed first.
func (u *hostSocket) open() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hs != nil {
		return nil
	}
	if err := os.Remove(u.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", u.path, err)
	}
	ln, err := net.Listen("unix", u.path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", u.path, err)
	}
	hs := NewHTTPServer(u.h)
	u.hs = hs
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			u.log.Error("host socket stopped", "path", u.path, "err", err)
		}
	}()
	u.log.Info("envd listening", "unix", u.path)
	return nil
}

// close stops the listener and cuts every connection accepted on it; the sandbox then holds
// no host socket and can be checkpointed.
func (u *hostSocket) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hs == nil {
		return nil
	}
	err := u.hs.Close()
	u.hs = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", u.path, err)
	}
	return nil
}
