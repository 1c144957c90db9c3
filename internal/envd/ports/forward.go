package ports

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Forwarder relays localhost-only servers to the sandbox's external addresses.
type Forwarder struct {
	// External returns the addresses to listen on; the sandbox's non-loopback addresses by
	// default. Tests point it elsewhere.
	External func() ([]netip.Addr, error)
	// Tables are the socket tables to scan.
	Tables   []string
	Interval time.Duration
	Log      *slog.Logger

	mu     sync.Mutex
	active map[uint16]*relay // by port
}

// New returns a Forwarder for the sandbox's own network.
func New(log *slog.Logger) *Forwarder {
	return &Forwarder{
		External: externalAddrs,
		Tables:   []string{"/proc/net/tcp", "/proc/net/tcp6"},
		Interval: time.Second,
		Log:      log,
		active:   map[uint16]*relay{},
	}
}

// Run scans and forwards until ctx ends, then closes every forwarder.
func (f *Forwarder) Run(ctx context.Context) {
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	defer f.closeAll()
	for {
		f.sync()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Forwarded returns the ports being forwarded.
func (f *Forwarder) Forwarded() []uint16 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]uint16, 0, len(f.active))
	for p := range f.active {
		out = append(out, p)
	}
	return out
}

// sync starts forwarders for new localhost-only servers and stops those whose server left.
func (f *Forwarder) sync() {
	ls, err := readListeners(f.Tables...)
	if err != nil {
		f.Log.Warn("port scan failed", "err", err)
		return
	}
	external, err := f.External()
	if err != nil {
		f.Log.Warn("list sandbox addresses failed", "err", err)
		return
	}
	isExternal := map[netip.Addr]bool{}
	for _, a := range external {
		isExternal[a] = true
	}
	// A port is forwarded when something listens on loopback and nothing already listens on
	// a wildcard or external address for it (then it is reachable as it is).
	local, reachable := map[uint16]netip.Addr{}, map[uint16]bool{}
	for _, l := range ls {
		switch {
		case l.addr.IsUnspecified() || isExternal[l.addr]:
			reachable[l.port] = true
		case l.addr.IsLoopback():
			if _, seen := local[l.port]; !seen || l.addr.Is4() {
				local[l.port] = l.addr
			}
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for port, r := range f.active {
		if _, ok := local[port]; !ok || (reachable[port] && !r.owns(ls)) {
			r.close()
			delete(f.active, port)
			f.Log.Info("stopped forwarding port", "port", port)
		}
	}
	for port, target := range local {
		if _, ok := f.active[port]; ok || reachable[port] {
			continue
		}
		r, err := startRelay(netip.AddrPortFrom(target, port), external, f.Log)
		if err != nil {
			f.Log.Debug("cannot forward port", "port", port, "err", err)
			continue
		}
		f.active[port] = r
		f.Log.Info("forwarding localhost port", "port", port, "to", target)
	}
}

func (f *Forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for port, r := range f.active {
		r.close()
		delete(f.active, port)
	}
}

// relay listens on the external addresses for one port and copies connections to target.
type relay struct {
	target    netip.AddrPort
	listeners []net.Listener
	bound     []netip.AddrPort
}

func startRelay(target netip.AddrPort, external []netip.Addr, log *slog.Logger) (*relay, error) {
	r := &relay{target: target}
	for _, a := range external {
		ap := netip.AddrPortFrom(a, target.Port())
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			continue
		}
		r.listeners = append(r.listeners, ln)
		r.bound = append(r.bound, ap)
	}
	if len(r.listeners) == 0 {
		return nil, errors.New("no external address could be bound on port " + strconv.Itoa(int(target.Port())))
	}
	for _, ln := range r.listeners {
		go r.serve(ln, log)
	}
	return r, nil
}

// owns reports whether the wildcard/external listeners in ls are this relay's own sockets.
func (r *relay) owns(ls []listener) bool {
	for _, l := range ls {
		if l.port != r.target.Port() || l.addr.IsLoopback() {
			continue
		}
		mine := false
		for _, b := range r.bound {
			if b.Addr() == l.addr {
				mine = true
			}
		}
		if !mine {
			return false
		}
	}
	return true
}

func (r *relay) serve(ln net.Listener, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", r.target.String(), 5*time.Second)
			if err != nil {
				log.Debug("forward dial failed", "target", r.target, "err", err)
				return
			}
			defer up.Close()
			pipe(c, up)
		}()
	}
}

// pipe copies both ways and half-closes, so request/response protocols that shut down their
// write side still see the reply.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

func (r *relay) close() {
	for _, ln := range r.listeners {
		ln.Close()
	}
}

// externalAddrs lists the sandbox's non-loopback unicast addresses.
func externalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr()
		// IPv4 link-local stays: microVM guests live on 169.254.0.2 behind their slot's NAT.
		// IPv6 link-local addresses need a zone to bind and are never how the host dials in.
		if ip.IsLoopback() || ip.IsMulticast() || (ip.Is6() && !ip.Is4In6() && ip.IsLinkLocalUnicast()) {
			continue
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}
