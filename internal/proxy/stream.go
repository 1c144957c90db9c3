package proxy

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Long-lived streams a proxy can end cleanly. A pause or fork ends them at once instead of
// waiting for them (they never end by themselves), each with an end its client understands:
//   - a Connect streaming RPC (envd's process output, PTYs, file watchers) gets a Connect
//     end-of-stream message with code "unavailable" and the reason, so the SDKs raise a
//     clear error and the process behind it runs on;
//   - a WebSocket gets a close frame with status 1001 (going away) and the reason;
//   - server-sent events end with the end of the response body (EventSource reconnects);
//   - any other upgraded connection is closed.
//
// The end is only ever inserted between two messages or frames: one in flight is let through
// first, for up to streamEndWait, and the stream is cut if it has not finished by then.
type streamKind int

const (
	notStream streamKind = iota
	connectStream
	webSocket
	eventStream
	otherUpgrade
)

// streamEndWait bounds how long a stream's end waits for the message in flight.
const streamEndWait = time.Second

// classify tells whether res opens a long-lived stream the proxy knows how to end.
func classify(res *http.Response) streamKind {
	if res.StatusCode == http.StatusSwitchingProtocols {
		if strings.EqualFold(res.Header.Get("Upgrade"), "websocket") {
			return webSocket
		}
		return otherUpgrade
	}
	if res.ContentLength >= 0 {
		return notStream // a known length ends by itself
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(mt, "application/connect+"):
		return connectStream
	case mt == "text/event-stream":
		return eventStream
	}
	return notStream
}

// endableBody wraps a streaming response body (or an upgraded connection) so that end can
// finish it between two messages.
type endableBody struct {
	up      io.ReadCloser
	kind    streamKind
	abort   func() // unblocks a Read waiting on the upstream
	framing *frames

	mu     sync.Mutex
	ending bool
	out    []byte // the end message, left to return
	done   bool   // nothing more: EOF
	timer  *time.Timer
}

func newEndableBody(up io.ReadCloser, kind streamKind, abort func()) *endableBody {
	b := &endableBody{up: up, kind: kind, abort: sync.OnceFunc(abort)}
	switch kind {
	case connectStream:
		b.framing = &frames{ws: false}
	case webSocket:
		b.framing = &frames{ws: true}
	}
	return b
}

// end makes the stream finish with reason, now if no message is in flight, else as soon as
// the one in flight is through (at most streamEndWait later).
func (b *endableBody) end(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ending || b.done {
		return
	}
	b.ending = true
	b.out = endMessage(b.kind, reason)
	if b.atBoundary() {
		// A Read may be waiting on the upstream: unblock it; it sees ending and returns the
		// end message.
		b.abort()
		return
	}
	b.timer = time.AfterFunc(streamEndWait, b.abort)
}

func (b *endableBody) atBoundary() bool { return b.framing == nil || b.framing.atBoundary() }

func (b *endableBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		b.mu.Lock()
		if n, err, ok := b.finishing(p); ok {
			b.mu.Unlock()
			return n, err
		}
		b.mu.Unlock()

		n, err := b.up.Read(p)

		b.mu.Lock()
		if !b.ending {
			b.framing.advance(p[:n])
			b.mu.Unlock()
			return n, err
		}
		// Ending: let through whole messages only. If one was in flight, everything up to
		// its end; of what follows, the messages read whole; nothing of one begun after.
		// (Without framing, every byte is a boundary and nothing more is let through.)
		keep := b.framing.lastBoundary(p[:n])
		if keep < 0 { // still inside the message in flight; an error here cuts the stream
			b.framing.advance(p[:n])
			b.mu.Unlock()
			return n, err
		}
		b.framing.advance(p[:keep])
		b.mu.Unlock()
		if keep > 0 {
			return keep, nil
		}
		// Nothing whole to pass on: loop to return the end message.
	}
}

// finishing returns the end message, or EOF after it, once the stream is ending and stands
// between two messages; b.mu must be held.
func (b *endableBody) finishing(p []byte) (int, error, bool) {
	if b.done {
		return 0, io.EOF, true
	}
	if !b.ending || !b.atBoundary() {
		return 0, nil, false
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.abort() // the upstream is not read again
	if len(b.out) == 0 {
		b.done = true
		return 0, io.EOF, true
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil, true
}

// Write passes an upgraded connection's client bytes to the upstream.
func (b *endableBody) Write(p []byte) (int, error) {
	w, ok := b.up.(io.Writer)
	if !ok {
		return 0, io.ErrClosedPipe
	}
	return w.Write(p)
}

func (b *endableBody) Close() error {
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
	return b.up.Close()
}

// endMessage is what a stream of kind gets as its last bytes.
func endMessage(kind streamKind, reason string) []byte {
	switch kind {
	case connectStream:
		// The end-of-stream message of the Connect protocol: flag 0x02, then JSON whatever
		// the stream's codec.
		body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": "unavailable", "message": reason}})
		msg := make([]byte, 5, 5+len(body))
		msg[0] = 0x02
		binary.BigEndian.PutUint32(msg[1:], uint32(len(body)))
		return append(msg, body...)
	case webSocket:
		// A close frame from the server: FIN + opcode 8, unmasked, status 1001 going away;
		// a control frame's payload is at most 125 bytes.
		if len(reason) > 123 {
			reason = reason[:123]
		}
		msg := []byte{0x88, byte(2 + len(reason)), 0x03, 0xE9}
		return append(msg, reason...)
	}
	return nil
}

// frames follows the message boundaries of a byte stream: Connect envelopes (a flag byte, a
// 4-byte big-endian length, the message) or WebSocket frames (RFC 6455 section 5.2). Close
// frames may stand between the frames of a fragmented WebSocket message (section 5.4), so a
// frame boundary is a message boundary for both.
type frames struct {
	ws        bool
	hdr       [14]byte
	hdrN      int    // header bytes seen of the current message
	remaining uint64 // payload bytes still to come once the header is complete
}

func (f *frames) atBoundary() bool { return f.hdrN == 0 && f.remaining == 0 }

// headerLen is the current message's header length, or 0 while it is not known yet.
func (f *frames) headerLen() int {
	if !f.ws {
		return 5
	}
	if f.hdrN < 2 {
		return 0
	}
	n := 2
	switch f.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.hdr[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

func (f *frames) payloadLen() uint64 {
	if !f.ws {
		return uint64(binary.BigEndian.Uint32(f.hdr[1:5]))
	}
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
	case 127:
		return binary.BigEndian.Uint64(f.hdr[2:10])
	default:
		return uint64(l)
	}
}

// step consumes b up to and including the end of the current message, or all of b if the
// message does not end in it, and says whether a message ended.
func (f *frames) step(b []byte) (n int, ended bool) {
	for n < len(b) {
		if f.hdrN > 0 || f.remaining == 0 {
			// In the header.
			f.hdr[f.hdrN] = b[n]
			f.hdrN++
			n++
			if hl := f.headerLen(); hl == 0 || f.hdrN < hl {
				continue
			}
			f.remaining = f.payloadLen()
			f.hdrN = 0
			if f.remaining == 0 {
				return n, true
			}
			continue
		}
		take := uint64(len(b) - n)
		if take > f.remaining {
			take = f.remaining
		}
		f.remaining -= take
		n += int(take)
		if f.remaining == 0 {
			return n, true
		}
	}
	return n, false
}

func (f *frames) advance(b []byte) {
	if f == nil {
		return
	}
	for len(b) > 0 {
		n, _ := f.step(b)
		b = b[n:]
	}
}

// lastBoundary returns the offset just past the last message that ends in b, 0 if b begins
// at a boundary and no message ends in it, or -1 if a message is in flight and does not end
// in b. It does not change f.
func (f *frames) lastBoundary(b []byte) int {
	if f == nil {
		return 0
	}
	last := -1
	if f.atBoundary() {
		last = 0
	}
	sim := *f
	for pos := 0; pos < len(b); {
		n, ended := sim.step(b[pos:])
		pos += n
		if ended {
			last = pos
		}
	}
	return last
}
