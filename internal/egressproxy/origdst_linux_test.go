package egressproxy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Without a NAT redirect, SO_ORIGINAL_DST reports the connection's own destination: the
// listener. That is what the proxy sees when someone connects to it directly.
func TestOriginalDstDefault(t *testing.T) {
	tests := []struct {
		name, listen string
	}{
		{"IPv4 socket", "127.0.0.1:0"},
		{"dual-stack socket", ":0"}, // an AF_INET6 socket taking an IPv4 client
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tt.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			c, err := net.Dial("tcp", want.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := originalDst(s)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOPROTOOPT) {
				t.Skipf("conntrack does not track loopback on this host: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("originalDst = %v, want %v", got, want)
			}

			// The server with its default OriginalDst refuses such a connection.
			p := startProxy(t, map[uint16]string{}, func(c *Config) { c.OriginalDst = nil })
			pc := p.dial(t)
			if _, err := pc.Write([]byte("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, pc, 5*time.Second)
			deadline := time.Now().Add(2 * time.Second)
			for !strings.Contains(p.logs.String(), "directly") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(p.logs.String(), "directly") {
				t.Errorf("proxy did not refuse as a direct connection; log:\n%s", p.logs.String())
			}
		})
	}

	if _, err := originalDst(&net.UnixConn{}); err == nil {
		t.Error("originalDst on a non-TCP conn succeeded")
	}
}
