package ports

import (
	"bufio"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in   string
		want netip.AddrPort
	}{
		{"0100007F:1F90", netip.MustParseAddrPort("127.0.0.1:8080")},
		{"00000000:0050", netip.MustParseAddrPort("0.0.0.0:80")},
		{"00000000000000000000000001000000:C350", netip.MustParseAddrPort("[::1]:50000")},
		{"0000000000000000FFFF00000100007F:0016", netip.MustParseAddrPort("127.0.0.1:22")}, // v4-mapped
	}
	for _, tt := range tests {
		l, err := parseAddr(tt.in)
		if err != nil {
			t.Fatalf("parseAddr(%q): %v", tt.in, err)
		}
		if got := netip.AddrPortFrom(l.addr, l.port); got != tt.want {
			t.Errorf("parseAddr(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "0100007F", "zz:0050", "0100007F:zz", "01007F:0050"} {
		if _, err := parseAddr(bad); err == nil {
			t.Errorf("parseAddr(%q) accepted a malformed address", bad)
		}
	}
}

// echoServer answers each line with the same line prefixed by "echo:".
func echoServer(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					c.Write([]byte("echo:" + sc.Text() + "\n"))
				}
			}()
		}
	}()
	return ln
}

func roundTrip(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hi\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// A server bound to 127.0.0.1 becomes reachable on the external address, and stops being
// reachable there once it goes away. 127.0.0.2 stands in for the sandbox's external address.
func TestForwardsLocalhostServer(t *testing.T) {
	external := netip.MustParseAddr("127.0.0.2")
	f := New(slog.New(slog.DiscardHandler))
	f.External = func() ([]netip.Addr, error) { return []netip.Addr{external}, nil }
	defer f.closeAll()

	ln := echoServer(t, "127.0.0.1:0")
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	extAddr := netip.AddrPortFrom(external, port).String()

	if _, err := roundTrip(extAddr); err == nil {
		t.Fatal("external address answered before forwarding started")
	}
	f.sync()
	if !slices.Contains(f.Forwarded(), port) {
		t.Fatalf("port %d not forwarded; forwarded: %v", port, f.Forwarded())
	}
	got, err := roundTrip(extAddr)
	if err != nil || got != "echo:hi\n" {
		t.Fatalf("through forwarder: %q, %v", got, err)
	}
	// A second scan keeps the forwarder (its own external socket must not look like a rival).
	f.sync()
	if got, err := roundTrip(extAddr); err != nil || got != "echo:hi\n" {
		t.Fatalf("after rescan: %q, %v", got, err)
	}

	ln.Close()
	f.sync()
	if slices.Contains(f.Forwarded(), port) {
		t.Fatalf("port %d still forwarded after its server closed", port)
	}
	if _, err := roundTrip(extAddr); err == nil {
		t.Fatal("external address still answers after the server closed")
	}
}

// A server already listening on all addresses needs no forwarder.
func TestSkipsWildcardServer(t *testing.T) {
	f := New(slog.New(slog.DiscardHandler))
	f.External = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil }
	defer f.closeAll()
	ln := echoServer(t, "0.0.0.0:0")
	defer ln.Close()
	f.sync()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if slices.Contains(f.Forwarded(), port) {
		t.Fatalf("wildcard server on port %d was forwarded", port)
	}
}
