//go:build !linux

package egressproxy

import (
	"errors"
	"net"
	"net/netip"
)

// originalDst needs Linux conntrack; elsewhere Config.OriginalDst must be set.
func originalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST is only available on Linux")
}
