package egressproxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
)

// captureClientHello runs a real crypto/tls client against a pipe and returns the first
// record it writes: its ClientHello, exactly as a sandbox would send it.
func captureClientHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c, cfg).Handshake() // fails once the pipe closes
	}()
	hdr := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(s, hdr); err != nil {
		tb.Fatalf("read record header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
	if _, err := io.ReadFull(s, body); err != nil {
		tb.Fatalf("read record body: %v", err)
	}
	s.Close()
	c.Close()
	<-done
	return append(hdr, body...)
}

// refragment re-splits the handshake bytes carried by records into records of at most
// size bytes each, as a client or middlebox may.
func refragment(records []byte, size int) []byte {
	var hs []byte
	for len(records) >= recordHeaderLen {
		n := int(binary.BigEndian.Uint16(records[3:5]))
		hs = append(hs, records[recordHeaderLen:recordHeaderLen+n]...)
		records = records[recordHeaderLen+n:]
	}
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// chunkReader returns at most n bytes per Read, like a TCP stream delivering segments.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.n)])
}

// Hand-built ClientHellos for the malformed cases crypto/tls will not produce.

func vec8(b []byte) []byte  { return append([]byte{byte(len(b))}, b...) }
func vec16(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func ext(typ uint16, data []byte) []byte {
	return cat([]byte{byte(typ >> 8), byte(typ)}, vec16(data))
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, cat([]byte{serverNameTypeHostName}, vec16([]byte(n)))...)
	}
	return ext(extensionServerName, vec16(list))
}

// helloBody builds a ClientHello body with the given session id and extensions block
// (already length-prefixed, or nil for none).
func helloBody(sessionID, extBlock []byte) []byte {
	return cat(
		[]byte{3, 3}, make([]byte, 32), // legacy_version, random
		vec8(sessionID),
		vec16([]byte{0x13, 0x01, 0xc0, 0x2f}), // cipher suites
		vec8([]byte{0}),                       // compression: null
		extBlock,
	)
}

// wrap frames a handshake message of type typ in one TLS record.
func wrap(typ byte, body []byte) []byte {
	n := len(body)
	hs := cat([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body)
	return cat([]byte{recordTypeHandshake, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs)
}

func TestReadClientHelloReal(t *testing.T) {
	tests := []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"default", &tls.Config{ServerName: "api.example.com"}, "api.example.com"},
		{"TLS 1.2 only", &tls.Config{ServerName: "api.example.com", MaxVersion: tls.VersionTLS12}, "api.example.com"},
		{"TLS 1.3 classic curves", &tls.Config{ServerName: "www.allowed.test", CurvePreferences: []tls.CurveID{tls.X25519}}, "www.allowed.test"},
		{"no server name", &tls.Config{InsecureSkipVerify: true}, ""},
		{"IP server name sends no SNI", &tls.Config{ServerName: "203.0.113.7"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := captureClientHello(t, tt.cfg)
			// Split the ClientHello over records of several sizes, and each stream
			// over reads of several sizes; the extra bytes after it stand for what a
			// client may send before the server answers.
			trailer := []byte("\x14\x03\x03\x00\x01\x01")
			for _, recSize := range []int{1 << 14, 512, 100, 7, 1} {
				stream := cat(refragment(hello, recSize), trailer)
				for _, readSize := range []int{1 << 16, 1000, 5, 1} {
					r := bytes.NewReader(stream)
					raw, sni, err := readClientHello(&chunkReader{r, readSize})
					if err != nil {
						t.Fatalf("records of %d, reads of %d: %v", recSize, readSize, err)
					}
					if sni != tt.want {
						t.Errorf("records of %d, reads of %d: SNI %q, want %q", recSize, readSize, sni, tt.want)
					}
					// What was read plus what is left is the stream: nothing lost or
					// altered, so replaying raw upstream is exact.
					rest, _ := io.ReadAll(r)
					if !bytes.Equal(cat(raw, rest), stream) {
						t.Errorf("records of %d, reads of %d: read %d + left %d bytes do not make up the %d-byte stream",
							recSize, readSize, len(raw), len(rest), len(stream))
					}
				}
			}
		})
	}
}

func TestReadClientHelloMalformed(t *testing.T) {
	good := sniExt("a.example.com")
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr string // "" means success expected
	}{
		{name: "hand-built sanity", in: wrap(1, helloBody(nil, vec16(good))), want: "a.example.com"},
		{name: "no extensions", in: wrap(1, helloBody(nil, nil))},
		{name: "other name type only", in: wrap(1, helloBody(nil, vec16(ext(0, vec16(cat([]byte{1}, vec16([]byte("x")))))))), want: ""},
		{name: "SNI after other extensions", in: wrap(1, helloBody(make([]byte, 32), vec16(cat(ext(10, []byte{0, 2, 0, 29}), ext(0xff01, []byte{0}), good)))), want: "a.example.com"},
		{name: "empty input", in: nil, wantErr: "EOF"},
		{name: "SNI with a space", in: wrap(1, helloBody(nil, vec16(ext(0, vec16(cat([]byte{0}, vec16([]byte("a.test b.test")))))))), wantErr: "not a host name"},
		{name: "plain HTTP", in: []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"), wantErr: "not handshake"},
		{name: "SSLv2 hello", in: []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, wantErr: "not handshake"},
		{name: "one byte of garbage", in: []byte{0x42}, wantErr: "not handshake"},
		{name: "bad version", in: []byte{0x16, 0x02, 0x00, 0x00, 0x05}, wantErr: "not TLS"},
		{name: "empty record", in: []byte{0x16, 0x03, 0x01, 0x00, 0x00}, wantErr: "out of range"},
		{name: "record too long", in: []byte{0x16, 0x03, 0x01, 0x40, 0x01}, wantErr: "out of range"},
		{name: "server hello", in: wrap(2, helloBody(nil, vec16(good))), wantErr: "not ClientHello"},
		{name: "huge message length", in: []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff}, wantErr: "limit"},
		{name: "truncated", in: wrap(1, helloBody(nil, vec16(good)))[:60], wantErr: "EOF"},
		{name: "non-handshake record mid-hello", in: cat(refragment(wrap(1, helloBody(nil, vec16(good))), 20)[:25], []byte{0x17, 3, 3, 0, 1, 0}), wantErr: "not handshake"},
		{name: "session id too long", in: wrap(1, helloBody(make([]byte, 33), vec16(good))), wantErr: "session id"},
		{name: "odd cipher suites", in: wrap(1, cat([]byte{3, 3}, make([]byte, 32), vec8(nil), vec16([]byte{1, 2, 3}), vec8([]byte{0}))), wantErr: "cipher suites"},
		{name: "no compression", in: wrap(1, cat([]byte{3, 3}, make([]byte, 32), vec8(nil), vec16([]byte{0x13, 1}), vec8(nil))), wantErr: "compression"},
		{name: "body shorter than random", in: wrap(1, []byte{3, 3, 1, 2}), wantErr: "truncated"},
		{name: "extensions overrun", in: wrap(1, cat(helloBody(nil, nil), []byte{0, 50}, good)), wantErr: "extensions block"},
		{name: "junk after extensions", in: wrap(1, helloBody(nil, cat(vec16(good), []byte{0}))), wantErr: "extensions block"},
		{name: "extension overrun", in: wrap(1, helloBody(nil, vec16([]byte{0, 0, 0, 40, 0}))), wantErr: "extension is truncated"},
		{name: "two SNI extensions", in: wrap(1, helloBody(nil, vec16(cat(good, sniExt("b.example.com"))))), wantErr: "two server_name"},
		{name: "two host names", in: wrap(1, helloBody(nil, vec16(sniExt("a.example.com", "b.example.com")))), wantErr: "two host names"},
		{name: "empty host name", in: wrap(1, helloBody(nil, vec16(sniExt("")))), wantErr: "empty"},
		{name: "empty server name list", in: wrap(1, helloBody(nil, vec16(ext(0, vec16(nil))))), wantErr: "malformed"},
		{name: "host name overrun", in: wrap(1, helloBody(nil, vec16(ext(0, vec16([]byte{0, 0, 9, 'a'}))))), wantErr: "truncated"},
		{name: "message over 16 KiB", in: func() []byte {
			// A real-looking hello padded past the limit, split into legal records.
			h := wrap(1, helloBody(nil, vec16(cat(good, ext(21, make([]byte, 1<<14))))))
			return refragment(h, 1<<14)
		}(), wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tt.in), iotest.OneByteReader(bytes.NewReader(tt.in))} {
				raw, sni, err := readClientHello(r)
				if tt.wantErr == "" {
					if err != nil || sni != tt.want {
						t.Fatalf("got %q, %v; want %q", sni, err, tt.want)
					}
					if !bytes.Equal(raw, tt.in) {
						t.Fatalf("raw is %d bytes, want the %d-byte input", len(raw), len(tt.in))
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error containing %q", sni, err, tt.wantErr)
				}
			}
		})
	}
}

// The buffer cap holds even for a stream of legal records that never completes a hello.
func TestReadClientHelloCap(t *testing.T) {
	// Declares a 16 KiB hello, then delivers it one byte per record: the headers use
	// up the buffer before the message completes.
	hello := wrap(1, helloBody(nil, vec16(ext(21, make([]byte, 1<<14-100)))))
	stream := refragment(hello, 1)
	n := 0
	r := &countingReader{r: bytes.NewReader(stream), n: &n}
	_, _, err := readClientHello(r)
	if err == nil || !strings.Contains(err.Error(), "no complete ClientHello") {
		t.Fatalf("err = %v, want the cap to stop it", err)
	}
	if n > maxHelloBytes {
		t.Fatalf("read %d bytes, cap is %d", n, maxHelloBytes)
	}
}

type countingReader struct {
	r io.Reader
	n *int
}

func (c *countingReader) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	*c.n += m
	return m, err
}

func FuzzParseClientHello(f *testing.F) {
	hello := captureClientHello(f, &tls.Config{ServerName: "api.example.com"})
	f.Add(hello)
	f.Add(refragment(hello, 13))
	f.Add(captureClientHello(f, &tls.Config{InsecureSkipVerify: true}))
	f.Add(wrap(1, helloBody(nil, vec16(sniExt("a.example.com")))))
	f.Add(wrap(1, helloBody(nil, nil)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, sni, err := readClientHello(bytes.NewReader(data))
		if !bytes.HasPrefix(data, raw) {
			t.Fatalf("raw is not a prefix of the input")
		}
		// However the bytes arrive, the answer is the same.
		raw1, sni1, err1 := readClientHello(iotest.OneByteReader(bytes.NewReader(data)))
		if sni1 != sni || (err1 == nil) != (err == nil) {
			t.Fatalf("whole: %q, %v; byte by byte: %q, %v", sni, err, sni1, err1)
		}
		if err == nil && !bytes.HasPrefix(raw, raw1) {
			t.Fatalf("byte-by-byte read %d bytes, whole read %d: not a prefix", len(raw1), len(raw))
		}
		if err == nil && sni != "" && len(sni) > len(data) {
			t.Fatalf("SNI longer than input")
		}
		if errors.Is(err, errNeedMore) {
			t.Fatalf("errNeedMore leaked: %v", err)
		}
	})
}
