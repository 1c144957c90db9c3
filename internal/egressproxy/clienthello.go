package egressproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	recordHeaderLen  = 5
	maxRecordPayload = 1 << 14 // TLS plaintext records carry at most 16 KiB
	// maxHelloBytes caps what is read looking for the ClientHello: one full record's
	// worth. Real ClientHellos, post-quantum key shares included, are a few KiB.
	maxHelloBytes = recordHeaderLen + maxRecordPayload

	recordTypeHandshake    = 0x16
	handshakeClientHello   = 1
	extensionServerName    = 0
	serverNameTypeHostName = 0
)

// errNeedMore means the bytes so far are a valid prefix of a ClientHello that is not
// complete yet.
var errNeedMore = errors.New("incomplete ClientHello")

// helloParser reassembles the ClientHello handshake message from TLS records as bytes
// arrive, so each read costs only the new bytes however the client splits its records.
type helloParser struct {
	off int    // start of the first record not yet consumed from raw
	hs  []byte // handshake bytes gathered from consumed records
}

// feed takes all bytes read so far (raw only grows between calls) and returns the SNI
// host name ("" if the ClientHello has none), errNeedMore, or why raw is not a ClientHello.
func (p *helloParser) feed(raw []byte) (string, error) {
	for {
		if n, ok := p.messageLen(); ok && len(p.hs) >= n {
			return parseClientHello(p.hs[4:n])
		}
		rest := raw[p.off:]
		if len(rest) < recordHeaderLen {
			return "", p.checkPrefix(rest)
		}
		if err := checkRecordHeader(rest); err != nil {
			return "", err
		}
		n := int(binary.BigEndian.Uint16(rest[3:5]))
		if len(rest) < recordHeaderLen+n {
			return "", errNeedMore
		}
		p.hs = append(p.hs, rest[recordHeaderLen:recordHeaderLen+n]...)
		p.off += recordHeaderLen + n
		if len(p.hs) >= 1 && p.hs[0] != handshakeClientHello {
			return "", fmt.Errorf("first handshake message has type %d, not ClientHello", p.hs[0])
		}
		if n, ok := p.messageLen(); ok && n > maxRecordPayload {
			return "", fmt.Errorf("ClientHello of %d bytes is over the %d-byte limit", n, maxRecordPayload)
		}
	}
}

// messageLen is the whole handshake message's length, header included, once known.
func (p *helloParser) messageLen() (int, bool) {
	if len(p.hs) < 4 {
		return 0, false
	}
	return 4 + (int(p.hs[1])<<16 | int(p.hs[2])<<8 | int(p.hs[3])), true
}

// checkPrefix fails early on a partial record header that cannot start a handshake
// record, so a plain-text client is not left waiting for the timeout.
func (p *helloParser) checkPrefix(rest []byte) error {
	if len(rest) >= 1 && rest[0] != recordTypeHandshake {
		return fmt.Errorf("record type 0x%02x is not handshake", rest[0])
	}
	if len(rest) >= 2 && rest[1] != 3 {
		return fmt.Errorf("record version major %d is not TLS", rest[1])
	}
	return errNeedMore
}

func checkRecordHeader(h []byte) error {
	if h[0] != recordTypeHandshake {
		return fmt.Errorf("record type 0x%02x is not handshake", h[0])
	}
	if h[1] != 3 {
		return fmt.Errorf("record version major %d is not TLS", h[1])
	}
	n := int(binary.BigEndian.Uint16(h[3:5]))
	// Empty handshake records are forbidden (RFC 8446 5.1) and would let a client
	// stall the parser without making progress.
	if n == 0 || n > maxRecordPayload {
		return fmt.Errorf("record length %d is out of range", n)
	}
	return nil
}

// reader walks a byte string, failing instead of panicking on short input.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) bytes(n int) []byte {
	if r.err || n < 0 || n > len(r.b) {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

// vec reads a vector whose length prefix is size bytes long.
func (r *reader) vec(size int) []byte {
	var n int
	if size == 1 {
		n = r.u8()
	} else {
		n = r.u16()
	}
	return r.bytes(n)
}

// parseClientHello reads a ClientHello body (after the 4-byte handshake header) and
// returns the first host_name of its server_name extension, or "" if it has none.
func parseClientHello(body []byte) (string, error) {
	r := &reader{b: body}
	r.bytes(2)  // legacy_version
	r.bytes(32) // random
	if sid := r.vec(1); len(sid) > 32 {
		return "", errors.New("ClientHello session id is longer than 32 bytes")
	}
	if cs := r.vec(2); !r.err && (len(cs) == 0 || len(cs)%2 != 0) {
		return "", errors.New("ClientHello cipher suites are malformed")
	}
	if cm := r.vec(1); !r.err && len(cm) == 0 {
		return "", errors.New("ClientHello has no compression methods")
	}
	if r.err {
		return "", errors.New("ClientHello is truncated")
	}
	if len(r.b) == 0 {
		return "", nil // extensions are optional (SSLv3/TLS 1.0 era clients)
	}
	exts := &reader{b: r.vec(2)}
	if r.err || len(r.b) != 0 {
		return "", errors.New("ClientHello extensions block is malformed")
	}
	var sni string
	seen := false
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec(2)
		if exts.err {
			return "", errors.New("ClientHello extension is truncated")
		}
		if typ != extensionServerName {
			continue
		}
		if seen {
			// Two server_name extensions could show one name to us and another to
			// the server; RFC 8446 4.2 forbids duplicates, so refuse.
			return "", errors.New("ClientHello has two server_name extensions")
		}
		seen = true
		name, err := parseServerName(data)
		if err != nil {
			return "", err
		}
		sni = name
	}
	return sni, nil
}

func parseServerName(data []byte) (string, error) {
	r := &reader{b: data}
	list := &reader{b: r.vec(2)}
	if r.err || len(r.b) != 0 || len(list.b) == 0 {
		return "", errors.New("server_name extension is malformed")
	}
	var host string
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.vec(2)
		if list.err {
			return "", errors.New("server_name entry is truncated")
		}
		if typ != serverNameTypeHostName {
			continue
		}
		if host != "" {
			return "", errors.New("server_name has two host names")
		}
		if len(name) == 0 {
			return "", errors.New("server_name host name is empty")
		}
		host = string(name)
		if err := checkHostName(host); err != nil {
			return "", fmt.Errorf("server_name: %w", err)
		}
	}
	return host, nil
}

// readClientHello reads from r until a whole ClientHello is in hand and returns every
// byte read (to replay upstream) and the SNI host name ("" if there is none).
func readClientHello(r io.Reader) (raw []byte, sni string, err error) {
	buf := make([]byte, maxHelloBytes)
	var p helloParser
	n := 0
	for {
		m, rerr := r.Read(buf[n:])
		n += m
		if m > 0 {
			sni, err = p.feed(buf[:n])
			if err == nil {
				return buf[:n], sni, nil
			}
			if !errors.Is(err, errNeedMore) {
				return buf[:n], "", fmt.Errorf("parse ClientHello: %w", err)
			}
			if n == len(buf) {
				return buf[:n], "", fmt.Errorf("no complete ClientHello in the first %d bytes", n)
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return buf[:n], "", fmt.Errorf("read ClientHello after %d bytes: %w", n, rerr)
		}
	}
}
