package egressproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
)

// benchBytes is what each iteration sends upstream after the request head.
const benchBytes = 64 << 20

// BenchmarkRelay compares a connection relayed by the inspector with the same connection
// made directly, on loopback: the inspector's cost per byte once a name is allowed.
func BenchmarkRelay(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	srv, err := New(Config{
		Lookup:      func(netip.Addr) ([]string, bool) { return []string{"api.example.com"}, true },
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return netip.MustParseAddrPort("203.0.113.7:80"), nil },
		Resolve: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		},
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, sink.Addr().String())
		},
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	head := []byte("POST /upload HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	buf := make([]byte, 256<<10)
	for _, tc := range []struct{ name, addr string }{{"direct", sink.Addr().String()}, {"inspected", ln.Addr().String()}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(benchBytes)
			for b.Loop() {
				c, err := net.Dial("tcp", tc.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(head); err != nil {
					b.Fatal(err)
				}
				for sent := 0; sent < benchBytes; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				// Wait for the far end to have read everything: it closes after EOF.
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
}
