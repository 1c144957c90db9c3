package egressproxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestReadHTTPHost(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{name: "simple", in: "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", want: "api.example.com"},
		{name: "port stripped", in: "GET / HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n", want: "api.example.com"},
		{name: "case and trailing dot", in: "GET / HTTP/1.1\r\nHost: API.Example.COM.\r\n\r\n", want: "api.example.com"},
		{name: "body follows", in: "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello", want: "a.test"},
		{name: "absolute form wins over Host", in: "GET http://other.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", want: "other.test"},
		{name: "HTTP/1.0 without Host", in: "GET / HTTP/1.0\r\n\r\n", want: ""},
		{name: "IPv6 literal", in: "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", want: "::1"},
		{name: "TLS bytes", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", wantErr: "malformed"},
		{name: "two Host headers", in: "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", wantErr: "Host"},
		{name: "truncated", in: "GET / HTTP/1.1\r\nHost: a.te", wantErr: "EOF"},
		{name: "empty", in: "", wantErr: "EOF"},
		{name: "folded Host leaves a space", in: "0 * HTTP/0.0\nHost:1\n \n\r\n", wantErr: "not a host name"},
		{name: "Host with a space inside", in: "GET / HTTP/1.1\r\nHost: a.test b.test\r\n\r\n", wantErr: "not a host name"},
		{name: "head over 16 KiB", in: "GET / HTTP/1.1\r\nHost: a.test\r\nX: " + strings.Repeat("x", 17<<10) + "\r\n\r\n", wantErr: "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{1 << 16, 7, 1} {
				r := bytes.NewReader([]byte(tt.in))
				raw, host, err := readHTTPHost(&chunkReader{r, size})
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("reads of %d: got %q, %v; want error containing %q", size, host, err, tt.wantErr)
					}
					if len(raw) > maxHeadBytes {
						t.Fatalf("reads of %d: read %d bytes past the %d cap", size, len(raw), maxHeadBytes)
					}
					continue
				}
				if err != nil || host != tt.want {
					t.Fatalf("reads of %d: got %q, %v; want %q", size, host, err, tt.want)
				}
				rest, _ := io.ReadAll(r)
				if got := string(raw) + string(rest); got != tt.in {
					t.Fatalf("reads of %d: read %q + left %q is not the input", size, raw, rest)
				}
			}
		})
	}
}
