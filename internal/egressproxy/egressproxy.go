// Package egressproxy lets a sandbox whose outbound policy denies the internet reach the
// domain names its allowOut lists. Host nftables redirect a policed sandbox's TCP
// connections to ports 80 and 443 of denied destinations to this server, which reads the
// host name the sandbox asks for (the TLS ClientHello's SNI on 443, the HTTP Host on 80)
// without terminating anything. If the name is allowed, the server connects to that name as
// the host resolves it, on the same port, replays the bytes it read and then relays both
// ways; otherwise it closes the connection.
//
// The upstream address comes from the host's own resolution of the allowed name and never
// from the destination the sandbox dialled: otherwise a sandbox could send SNI
// api.openai.com to an address of its choosing and leave through the allowance.
package egressproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/egress"
)

const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultDialTimeout      = 10 * time.Second

	portHTTP  = 80
	portHTTPS = 443
)

// Config wires a Server. Lookup is required; the rest have defaults.
type Config struct {
	// Lookup returns the allowed domain patterns of the sandbox whose address is src
	// (the connection's remote address); ok false closes the connection.
	Lookup func(src netip.Addr) (domains []string, ok bool)
	// OriginalDst returns where the sandbox meant to connect (the destination before the
	// redirect). Default: SO_ORIGINAL_DST on the accepted *net.TCPConn (IPv4 only). Only
	// the port is used, to pick the protocol (443 → TLS SNI, 80 → HTTP Host; any other
	// port → close) and as the port to dial; a connection whose original destination
	// equals the listener's own address was not redirected (someone connected directly)
	// → close.
	OriginalDst func(c net.Conn) (netip.AddrPort, error)
	// Resolve looks up a hostname's IPv4 addresses. Default:
	// net.DefaultResolver.LookupNetIP(ctx, "ip4", host).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Allowed says whether the host may connect to addr on a sandbox's behalf; addresses
	// it refuses (private ranges, other sandboxes) are skipped; if none is left, close.
	// Default: all allowed, so production callers should set it.
	Allowed func(addr netip.Addr) bool
	// Dial connects to the chosen address. Default: net.Dialer with DialTimeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HandshakeTimeout bounds reading the ClientHello or request head (default 10 s).
	// DialTimeout bounds resolving the name and dialling upstream (default 10 s).
	HandshakeTimeout, DialTimeout time.Duration
	// Log receives one line per refused connection (Info) and per relayed one (Debug).
	// Default: slog.Default().
	Log *slog.Logger
}

// Server relays allowed connections. It has no idle timeout: a relayed connection lives
// as long as both ends keep it open, like a direct one would.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close, to abort resolves and dials
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]bool // client (true) and upstream (false) connections, closed by Close
	handlers  sync.WaitGroup
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("egressproxy: Config.Lookup is required")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = originalDst
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		}
	}
	if cfg.Allowed == nil {
		cfg.Allowed = func(netip.Addr) bool { return true }
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout}
		cfg.Dial = d.DialContext
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		log:       log.With("component", "egressproxy"),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]bool),
	}, nil
}

// Serve accepts on ln until ln is closed or Close is called; it returns nil after Close,
// and the accept error (errors.Is net.ErrClosed) if ln was closed by someone else.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if temporary(err) {
				// Out of file descriptors or memory: wait for connections to end
				// rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
				}
				continue
			}
			return fmt.Errorf("egressproxy: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !s.track(c, true) {
			c.Close()
			return nil
		}
		go func() {
			defer s.handlers.Done()
			defer s.untrack(c)
			defer c.Close()
			s.handle(c)
		}()
	}
}

// Close stops accepting and closes every connection being served; it waits for handlers
// to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.handlers.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("egressproxy: close listener %s: %w", ln.Addr(), err))
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.handlers.Wait()
	return errors.Join(errs...)
}

// CloseFrom closes every connection the sandbox at src has open through the server and
// reports how many. The agent calls it when the sandbox's policy changes, so that a tighter
// policy also ends what was allowed before, and when its address is released.
func (s *Server) CloseFrom(src netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c, client := range s.conns {
		// Closing the client ends its handler, which closes the upstream.
		if client && addrPort(c.RemoteAddr()).Addr() == src {
			c.Close()
			n++
		}
	}
	return n
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers c for Close to close, and a handler for it to wait on when handler is
// set; it reports false once the server is closed. Both happen under mu so Close never
// misses a connection nor races a WaitGroup.Add.
func (s *Server) track(c net.Conn, handler bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = handler
	if handler {
		s.handlers.Add(1)
	}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) handle(c net.Conn) {
	src := addrPort(c.RemoteAddr())
	log := s.log.With("src", src.String())
	domains, ok := s.cfg.Lookup(src.Addr())
	if !ok {
		log.Info("refused: source is not a sandbox with an outbound policy")
		return
	}
	dst, err := s.cfg.OriginalDst(c)
	if err != nil {
		log.Warn("refused: original destination unknown", "err", err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	log = log.With("dst", dst.String())
	if dst == addrPort(c.LocalAddr()) {
		log.Info("refused: connection was made to the proxy directly, not redirected")
		return
	}

	if err := c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		log.Debug("refused: set deadline", "err", err)
		return
	}
	var (
		raw  []byte
		host string
	)
	switch dst.Port() {
	case portHTTPS:
		raw, host, err = readClientHello(c)
	case portHTTP:
		raw, host, err = readHTTPHost(c)
	default:
		log.Info("refused: only ports 80 and 443 are relayed by host name")
		return
	}
	if err != nil {
		log.Info("refused: no host name", "err", err)
		return
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	log = log.With("host", host)
	if !egress.MatchDomain(domains, host) {
		log.Info("refused: host is not in the sandbox's allowOut")
		if dst.Port() == portHTTP {
			s.forbid(c, host)
		}
		return
	}

	up, addr, err := s.dialUpstream(host, dst.Port())
	if err != nil {
		log.Warn("refused: cannot reach allowed host", "err", err)
		return
	}
	defer s.untrack(up)
	defer up.Close()
	log.Debug("relaying", "upstream", addr.String())
	if err := relay(c, up, raw); err != nil && !s.isClosed() {
		log.Debug("relay ended", "err", err)
	}
}

// dialUpstream resolves host itself and connects to the first address Allowed accepts.
func (s *Server) dialUpstream(host string, port uint16) (net.Conn, netip.Addr, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	addrs, err := s.cfg.Resolve(ctx, host)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	var errs []error
	tried := 0
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || !s.cfg.Allowed(a) {
			continue
		}
		tried++
		target := net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
		up, err := s.cfg.Dial(ctx, "tcp", target)
		if err != nil {
			errs = append(errs, fmt.Errorf("dial %s: %w", target, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if !s.track(up, false) {
			up.Close()
			return nil, netip.Addr{}, errors.New("server closed")
		}
		return up, a, nil
	}
	if tried == 0 {
		return nil, netip.Addr{}, fmt.Errorf("none of the addresses %s resolves to (%v) may be dialled", host, addrs)
	}
	return nil, netip.Addr{}, errors.Join(errs...)
}

// forbid answers a refused HTTP request so the sandbox's user sees why instead of a
// bare connection reset.
func (s *Server) forbid(c net.Conn, host string) {
	body := fmt.Sprintf("hearth: host %q is not in this sandbox's allowOut\n", host)
	if host == "" {
		body = "hearth: the request names no host; only hosts in this sandbox's allowOut are reachable\n"
	}
	resp := "HTTP/1.1 403 Forbidden\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body
	_ = c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if _, err := io.WriteString(c, resp); err != nil {
		return
	}
	// Closing with unread request bytes queued would send a reset that can destroy the
	// response before the client reads it; end our side and drain briefly first.
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 256<<10))
	}
}

// errNoHalfClose ends a relay whose connection cannot close one direction alone.
var errNoHalfClose = errors.New("connection cannot half-close")

// relay writes the bytes already read from client to upstream, then copies both ways.
// When one direction reaches EOF its write side is shut so the peer sees the end while
// the other direction goes on; an error in either direction tears both down.
func relay(client, upstream net.Conn, replay []byte) error {
	if _, err := upstream.Write(replay); err != nil {
		return fmt.Errorf("replay %d bytes upstream: %w", len(replay), err)
	}
	errc := make(chan error, 2)
	go func() { errc <- copyHalf(upstream, client) }()
	go func() { errc <- copyHalf(client, upstream) }()
	var first error
	for range 2 {
		if err := <-errc; err != nil {
			client.Close()
			upstream.Close()
			if first == nil && !errors.Is(err, errNoHalfClose) {
				first = err
			}
		}
	}
	return first
}

func copyHalf(dst, src net.Conn) error {
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("copy %s → %s: %w", src.RemoteAddr(), dst.RemoteAddr(), err)
	}
	cw, ok := dst.(interface{ CloseWrite() error })
	if !ok {
		return errNoHalfClose
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("half-close %s: %w", dst.RemoteAddr(), err)
	}
	return nil
}

// addrPort reads a net.Addr as an unmapped netip.AddrPort (zero if it is not IP).
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
