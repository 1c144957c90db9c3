package egressproxy

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzReadHTTPHost: whatever a sandbox sends, the inspector neither panics nor loses bytes:
// what it read is a prefix of the input (it is replayed upstream verbatim), it never reads
// past its cap, and a host it accepts is one the head really names.
func FuzzReadHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"))
	f.Add([]byte("GET http://x.test:8080/p HTTP/1.1\r\nHost: y.test\r\n\r\nbody"))
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, host, err := readHTTPHost(bytes.NewReader(in))
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("read bytes are not a prefix of the input")
		}
		if len(raw) > maxHeadBytes {
			t.Fatalf("read %d bytes, over the %d cap", len(raw), maxHeadBytes)
		}
		if err == nil && host != "" && !strings.Contains(strings.ToLower(string(raw)), strings.ToLower(host)) {
			t.Fatalf("host %q does not appear in the head", host)
		}
	})
}
