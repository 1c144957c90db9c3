package uffd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultChunkSize is how much memory one fault populates by default: the 2 MiB-aligned
// block around the faulting page, clipped to its region. One UFFDIO_COPY round trip costs
// about 15 µs here, so 4 KiB per fault restores at ~250 MiB/s while 2 MiB blocks reach
// ~1.1 GiB/s (see BenchmarkRestore1GiB). The price is memory: a guest touching one byte of
// a block gets the whole block, which for a restored VM is memory it had before the pause.
const DefaultChunkSize = 2 << 20

// Config configures a Server.
type Config struct {
	// SocketPath is the Unix socket clients connect to. A stale socket file is replaced;
	// one a live server still answers on is an error.
	SocketPath string
	// MemFile is the snapshot's guest memory file.
	MemFile string
	// ChunkSize is the aligned block populated per fault: a power of two of at least the
	// host page size (0 means DefaultChunkSize). Regions with bigger pages use their page size.
	ChunkSize uint64
	// MaxSessions stops accepting clients after that many have handed over a userfaultfd,
	// and Serve returns once they are all done. 0 serves clients until the context ends.
	MaxSessions int
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Server serves guest memory from one memory file to the clients (Firecracker processes)
// that connect to its socket, each in its own session with its own userfaultfd.
type Server struct {
	cfg   Config
	log   *slog.Logger
	mem   *memFile
	ln    *net.UnixListener
	stats counters

	started     atomic.Int64 // sessions that handed over a userfaultfd
	serving     atomic.Bool  // Serve is running: it, not Close, releases the memory file
	releaseOnce sync.Once
	releaseErr  error
}

// NewServer maps the memory file and starts listening on the socket, so a client may
// connect as soon as it returns; call Serve to handle them.
func NewServer(cfg Config) (*Server, error) {
	if cfg.SocketPath == "" || cfg.MemFile == "" {
		return nil, errors.New("uffd server: socket path and memory file are required")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if bits.OnesCount64(cfg.ChunkSize) != 1 || cfg.ChunkSize < uint64(os.Getpagesize()) {
		return nil, fmt.Errorf("uffd server: chunk size %d is not a power of two of at least %d", cfg.ChunkSize, os.Getpagesize())
	}
	if cfg.MaxSessions < 0 {
		return nil, fmt.Errorf("uffd server: negative MaxSessions %d", cfg.MaxSessions)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mem, err := openMemFile(cfg.MemFile)
	if err != nil {
		return nil, fmt.Errorf("uffd server: %w", err)
	}
	ln, err := listen(cfg.SocketPath)
	if err != nil {
		_ = mem.close()
		return nil, fmt.Errorf("uffd server: %w", err)
	}
	s := &Server{cfg: cfg, log: log.With("socket", cfg.SocketPath), mem: mem, ln: ln}
	s.log.Info("uffd server listening", "mem_file", cfg.MemFile, "mem_bytes", mem.size(), "chunk_bytes", cfg.ChunkSize)
	return s, nil
}

// listen binds the socket, replacing a stale socket file left by a dead server. The socket
// is private to the owner: whoever connects can hand us its memory, and whoever we serve
// we may kill. Callers that run Firecracker under another uid chown it.
func listen(path string) (*net.UnixListener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another server is answering on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// Stats returns the server's counters so far.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Close stops accepting clients. Sessions already running go on until they end; the
// memory file stays mapped until Serve returns, or is unmapped here if Serve never ran.
func (s *Server) Close() error {
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if !s.serving.Load() {
		err = errors.Join(err, s.release())
	}
	return err
}

// release unmaps the memory file once no session can use it any more.
func (s *Server) release() error {
	s.releaseOnce.Do(func() { s.releaseErr = s.mem.close() })
	return s.releaseErr
}

// Serve accepts clients and serves each in its own session until ctx is cancelled, or
// until MaxSessions clients have come and their sessions have ended. A session ends when
// its client exits, unmaps all its memory, or ctx is cancelled (cancellation leaves the
// clients alone: their owner decides their fate). A session that cannot go on kills its
// client, so a VM is never left hanging on a fault nobody will serve; Serve returns those
// errors, joined, and logs each as it happens.
func (s *Server) Serve(ctx context.Context) (err error) {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("uffd server: Serve called twice")
	}
	defer func() {
		s.ln.Close()
		err = errors.Join(err, s.release())
	}()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("accept: %w", err))
				mu.Unlock()
			}
			break
		}
		wg.Go(func() {
			if err := s.serveConn(ctx, conn); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serveConn runs the handshake and the session of one client.
func (s *Server) serveConn(ctx context.Context, conn *net.UnixConn) error {
	// The connection stays open for the whole session: a client may read EOF as "handler gone".
	defer conn.Close()
	p, err := peerOf(conn)
	if err != nil {
		s.log.Warn("uffd client rejected", "err", err)
		return nil
	}
	log := s.log.With("peer_pid", p.pid)
	hs, err := readHandshake(conn)
	if hs.uffd < 0 {
		// The client handed us nothing it could hang on: refuse it and keep serving others.
		closePidfd(p)
		log.Warn("uffd client rejected", "err", err)
		return nil
	}
	if limit := s.cfg.MaxSessions; limit > 0 && s.started.Add(1) >= int64(limit) {
		s.ln.Close() // no more clients; the sessions already started run to completion
	}
	s.stats.sessions.Add(1)
	sess := newSession(s, p, log)
	if err == nil {
		err = sess.init(hs)
	} else {
		_ = unix.Close(hs.uffd)
	}
	if err == nil {
		err = sess.run(ctx)
	}
	sess.close()
	if err != nil {
		err = fmt.Errorf("uffd session for pid %d: %w", p.pid, err)
		s.killPeer(p, log, err)
	}
	closePidfd(p)
	return err
}

// killPeer SIGKILLs a client the server can no longer serve: its faults would otherwise
// block forever. The pidfd, when we have one, makes sure the signal reaches the process
// that connected even if its pid has been reused. The server never kills itself, which
// matters when a test plays the client in-process.
func (s *Server) killPeer(p peer, log *slog.Logger, cause error) {
	if p.pid <= 1 || p.pid == os.Getpid() {
		log.Error("uffd session failed; peer not killed (it is this process or unknown)", "err", cause)
		return
	}
	var err error
	if p.pidfd >= 0 {
		err = unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	} else {
		err = unix.Kill(p.pid, unix.SIGKILL)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		log.Error("uffd session failed; killing peer failed", "err", cause, "kill_err", err)
		return
	}
	s.stats.killed.Add(1)
	log.Error("uffd session failed; peer killed", "err", cause)
}

func closePidfd(p peer) {
	if p.pidfd >= 0 {
		_ = unix.Close(p.pidfd)
	}
}
