package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// InProcess is an http.RoundTripper that hands requests to a proxy handler running in the
// same process (hearth dev's agent proxy) instead of writing them to its socket: the control
// plane's hop to the agent then costs no HTTP serialization, no socket and no second copy of
// every body byte through the kernel. The handler is the agent's whole proxy, its token
// check included, so every check the agent makes on traffic from a remote control plane it
// makes here too.
//
// Upgraded connections (WebSockets) are not carried: the control plane sends those over the
// socket. HTTP trailers of the handler's responses are dropped.
type InProcess struct {
	h   atomic.Pointer[http.Handler]
	log *slog.Logger
}

// NewInProcess returns an InProcess with no handler yet: Ready is false until Set.
func NewInProcess(log *slog.Logger) *InProcess {
	if log == nil {
		log = slog.Default()
	}
	return &InProcess{log: log}
}

// Set installs the handler requests go to (once the agent has started).
func (p *InProcess) Set(h http.Handler) { p.h.Store(&h) }

// Ready reports whether a handler is installed.
func (p *InProcess) Ready() bool { return p.h.Load() != nil }

// RemoteAddr is the inbound requests' RemoteAddr. Like that of a Unix socket's peer it is no
// host:port, so the handler sees what it would over the socket.
const inProcessRemoteAddr = "@in-process"

// RoundTrip serves req with the handler and returns its response once the handler has
// written the head; the body streams through a pipe as the handler writes it.
func (p *InProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	hp := p.h.Load()
	if hp == nil {
		return nil, errors.New("in-process proxy: no handler installed yet")
	}
	in := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host, u.User = "", "", nil
	in.URL = &u
	in.RequestURI = u.RequestURI()
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/1.1", 1, 1
	in.RemoteAddr = inProcessRemoteAddr
	if in.Body == nil {
		in.Body = http.NoBody
	}
	body := newChunkPipe()
	w := &pipeWriter{header: http.Header{}, body: body, req: req, head: make(chan *http.Response, 1)}
	failed := make(chan error, 1)
	go func() {
		defer func() {
			if req.Body != nil {
				req.Body.Close()
			}
			if v := recover(); v != nil {
				err, ok := v.(error)
				if !ok || !errors.Is(err, http.ErrAbortHandler) {
					p.log.Error("in-process proxy handler panicked", "panic", v)
				}
				if err == nil {
					err = fmt.Errorf("in-process proxy handler panicked: %v", v)
				}
				w.end(err)
				if !w.wrote {
					failed <- err
				}
				return
			}
			w.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
			w.end(nil)
		}()
		(*hp).ServeHTTP(w, in)
	}()
	select {
	case res := <-w.head:
		return res, nil
	case err := <-failed:
		return nil, err
	}
}

// pipeWriter is the handler's ResponseWriter: the head becomes an http.Response, the body
// goes into a chunkPipe the response's Body reads. Every write reaches the reader at once,
// as if flushed.
type pipeWriter struct {
	header http.Header
	body   *chunkPipe
	// sock, for a large body, is the writing end of the socket pair it goes through instead.
	sock  net.Conn
	req   *http.Request
	head  chan *http.Response
	wrote bool
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	if w.wrote || (code >= 100 && code < 200) {
		// Informational responses (100 Continue, 103 Early Hints) are not passed on.
		return
	}
	w.wrote = true
	// A copy: the handler may go on changing its header map (trailers) while the response
	// is read.
	h := w.header.Clone()
	length := int64(-1)
	if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			length = n
		}
	}
	var body io.ReadCloser = w.body
	if length >= largeBody {
		if r, wr, err := socketPair(); err == nil {
			body, w.sock = r, wr
		}
	}
	w.head <- &http.Response{
		Status: strconv.Itoa(code) + " " + http.StatusText(code), StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: body, ContentLength: length, Request: w.req,
	}
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.sock != nil {
		return w.sock.Write(b)
	}
	return w.body.Write(b)
}

// end finishes the body: at EOF, or cut short with err.
func (w *pipeWriter) end(err error) {
	if w.sock != nil {
		// The reader sees EOF either way; a body cut short is shorter than its
		// Content-Length, which the server that sends it on tells its client.
		w.sock.Close()
	}
	w.body.closeWrite(err)
}

// largeBody is the Content-Length from which a body goes through a socket pair rather than
// a chunkPipe. Measured in the benchmark (docs/benchmarks.md): a download through a chunkPipe
// ran at about 0.6–0.7× of one through a socket, because a channel hands each chunk to the
// reader on the writer's own thread, so reading from the sandbox and writing to the client
// take turns on one core; across a socket the kernel wakes the reader on another.
const largeBody = 1 << 20

// socketPair returns the two ends of a Unix stream socket pair.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket pair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "in-process body")
		c, err := net.FileConn(f) // a duplicate of fd
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socket pair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// Flush does nothing: writes are never held back (see pipeWriter).
func (w *pipeWriter) Flush() {}

// pipeChunks is how many written chunks a chunkPipe holds for its reader.
const pipeChunks = 2

// chunkPipe carries a response body from the handler to the reader. Unlike io.Pipe, whose
// Write waits until the reader has taken the bytes, a write returns once they are copied
// into a pooled buffer, so the handler reads the next bytes from the sandbox while the
// reader sends these to the client, as the two would across a socket's buffer. At most
// pipeChunks buffers wait, and none when nothing is in flight (an idle stream holds none).
type chunkPipe struct {
	ch   chan []byte
	done chan struct{} // closed by Close: the reader is gone
	once sync.Once
	werr error // why the writer stopped (io.EOF for a complete body); set before ch closes

	// Reader only: the rest of the chunk being read, its buffer, and whether ch was seen closed.
	cur, curBuf []byte
	eof         bool
}

func newChunkPipe() *chunkPipe {
	return &chunkPipe{ch: make(chan []byte, pipeChunks), done: make(chan struct{})}
}

func (p *chunkPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		buf := copyBuffers.Get()
		m := copy(buf, b)
		select {
		case p.ch <- buf[:m]:
		case <-p.done:
			copyBuffers.Put(buf)
			return n, io.ErrClosedPipe
		}
		n, b = n+m, b[m:]
	}
	return n, nil
}

// closeWrite ends the body: with err, or at EOF when err is nil. The writer calls it once.
func (p *chunkPipe) closeWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.ch)
}

func (p *chunkPipe) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		if p.curBuf != nil {
			copyBuffers.Put(p.curBuf)
			p.cur, p.curBuf = nil, nil
		}
		if p.eof {
			return 0, p.werr
		}
		select {
		case c, ok := <-p.ch:
			if !ok {
				return 0, p.werr
			}
			p.cur, p.curBuf = c, c
		case <-p.done:
			return 0, io.ErrClosedPipe
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	// Take what else is waiting while there is room: the reader then writes what several
	// small reads from the sandbox brought in one system call, as it would have read it
	// from a socket.
	for n < len(b) && len(p.cur) == 0 {
		copyBuffers.Put(p.curBuf)
		p.cur, p.curBuf = nil, nil
		select {
		case c, ok := <-p.ch:
			if !ok {
				p.eof = true // the next Read returns werr
				return n, nil
			}
			p.cur, p.curBuf = c, c
			m := copy(b[n:], p.cur)
			p.cur, n = p.cur[m:], n+m
		default:
			return n, nil
		}
	}
	return n, nil
}

// Close tells the writer that nobody reads any more: its writes fail from now on.
func (p *chunkPipe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}
