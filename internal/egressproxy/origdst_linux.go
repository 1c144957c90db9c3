package egressproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// originalDst asks conntrack where an accepted IPv4 connection was headed before a NAT
// redirect (getsockopt SOL_IP SO_ORIGINAL_DST). With no NAT it returns the connection's
// own local address. It works on dual-stack listeners for IPv4 clients too, since the
// kernel routes SOL_IP options on such sockets to the IPv4 code.
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST needs a *net.TCPConn, not %T", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	var (
		mreq *unix.IPv6Mreq
		gerr error
	)
	err = raw.Control(func(fd uintptr) {
		// The kernel writes a 16-byte sockaddr_in; x/sys has no getter for that shape,
		// and IPv6Mreq is the portable one with a buffer at least that big.
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: conntrack has no entry for the connection: %w", err)
		}
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	sa := mreq.Multiaddr // struct sockaddr_in: family, port (big endian), IPv4 address
	if fam := binary.NativeEndian.Uint16(sa[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: address family %d is not IPv4", fam)
	}
	port := binary.BigEndian.Uint16(sa[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), port), nil
}
