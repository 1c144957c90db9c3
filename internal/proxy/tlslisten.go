package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// tlsRecordHandshake is the first byte of every TLS connection: the ClientHello travels in
// a handshake record. No HTTP request starts with it (methods are ASCII letters).
const tlsRecordHandshake = 0x16

// ServeTLSAndPlain wraps a listener so that one port serves HTTPS and plain HTTP: each
// connection's first byte says which it is, and TLS ones come out of Accept as *tls.Conn,
// which http.Server serves as HTTPS (r.TLS set, handshake bounded by its timeouts). The SDKs
// tell the two apart by the URLs they build: E2B_SANDBOX_URL (often http://) and
// https://PORT-ID.<domain>, so one --proxy-listen port serves both.
//
// A connection that sends nothing within firstByteTimeout is closed; classifying happens
// off the Accept loop, so a silent client delays no one.
func ServeTLSAndPlain(ln net.Listener, cfg *tls.Config, firstByteTimeout time.Duration) net.Listener {
	l := &sniffListener{Listener: ln, cfg: cfg, timeout: firstByteTimeout,
		conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

type sniffListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	conns   chan net.Conn

	once sync.Once
	done chan struct{}
	err  error // why the accept loop ended; read after done is closed
}

func (l *sniffListener) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait, as http.Server does.
				select {
				case <-time.After(backoff):
				case <-l.done:
					return
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			l.stop(err)
			return
		}
		backoff = 5 * time.Millisecond
		go l.classify(c)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (l *sniffListener) classify(c net.Conn) {
	var first [1]byte
	c.SetReadDeadline(time.Now().Add(l.timeout))
	if _, err := io.ReadFull(c, first[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var out net.Conn = &prefixConn{Conn: c, prefix: first[:]}
	if first[0] == tlsRecordHandshake {
		out = tls.Server(out, l.cfg)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		c.Close()
	}
}

func (l *sniffListener) stop(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

// Accept returns the next classified connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting; connections being classified are closed.
func (l *sniffListener) Close() error {
	err := l.Listener.Close()
	l.stop(net.ErrClosed)
	return err
}

// prefixConn gives back the bytes read to classify a connection before the rest.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
