package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/hearthsh/hearth/internal/uffd"
)

// memServer is the userfaultfd server serving one restored VM's memory from its snapshot.
// It runs as long as the VM: the VM faults pages in lazily for its whole life.
type memServer struct {
	srv    *uffd.Server
	cancel context.CancelFunc
	done   chan error
}

// startMemServer listens on sock for the one Firecracker that will load the snapshot and
// serves it from mem. A jailed Firecracker runs as uid:gid, so the socket is handed to it.
func startMemServer(sock, mem string, jailed bool, uid, gid int, log *slog.Logger) (*memServer, error) {
	srv, err := uffd.NewServer(uffd.Config{SocketPath: sock, MemFile: mem, MaxSessions: 1, Logger: log})
	if err != nil {
		return nil, err
	}
	if jailed {
		if err := os.Chown(sock, uid, gid); err != nil {
			srv.Close()
			return nil, fmt.Errorf("chown uffd socket: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &memServer{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := srv.Serve(ctx)
		if err != nil {
			log.Warn("uffd server ended", "err", err)
		}
		m.done <- err
	}()
	return m, nil
}

// stop ends the server once its VM is gone (or never came) and waits for it.
func (m *memServer) stop() {
	m.cancel()
	_ = m.srv.Close()
	<-m.done
}
