// Package ports makes servers that listen only on localhost inside a sandbox reachable from
// outside it. Every second it reads the kernel's TCP socket tables, and for each socket in
// LISTEN on 127.0.0.1 or ::1 it listens on the same port of the sandbox's external addresses
// and relays connections to the localhost server. When the server goes away, so does the
// forwarder.
package ports

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// tcpListen is the state code of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// listener is one listening socket from the socket tables.
type listener struct {
	addr netip.Addr
	port uint16
}

// readListeners parses /proc/net/tcp-format files and returns their LISTEN sockets.
func readListeners(paths ...string) ([]listener, error) {
	var out []listener
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if os.IsNotExist(err) { // no IPv6 in this sandbox
				continue
			}
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		ls, err := parseTable(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		out = append(out, ls...)
	}
	return out, nil
}

func parseTable(f *os.File) ([]listener, error) {
	var out []listener
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpListen {
			continue
		}
		l, err := parseAddr(fields[1])
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// parseAddr decodes "0100007F:1F90": the address is hex in the kernel's byte order, which on
// little-endian machines reverses each 32-bit word; the port is big-endian hex.
func parseAddr(s string) (listener, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return listener{}, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return listener{}, fmt.Errorf("bad port in %q: %w", s, err)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return listener{}, fmt.Errorf("bad address in %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return listener{addr: addr.Unmap(), port: uint16(port)}, nil
}
