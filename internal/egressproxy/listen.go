package egressproxy

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The host's nftables name the inspector's port (netslot: connections from anywhere but a
// slot to it are dropped, redirected slot connections to it accepted), and that table
// outlives the agent on purpose, so that sandboxes still running while it is down keep their
// isolation. A port from the kernel's ephemeral range would then be handed to some other
// socket sooner or later, a server's ":0" or a client's source port, whose packets the
// leftover rule would drop (seen: a test server on the inspector's old port timed out its
// every dial). So a port the operator did not choose is picked outside that range, where the
// kernel never assigns one by itself.

// ephemeralRangeFile is where Linux keeps the range it assigns ports from.
const ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// listenProbes bounds how many ports Listen tries after the first.
const listenProbes = 512

// Listen binds the inspector's TCP listener on every IPv4 address of the host: on port when
// it is not 0, else on a free port outside the kernel's ephemeral range (portsOutside), starting from one
// derived from key (the agent's slot prefix), so an agent tends to get the same port each
// start and agents with other keys others.
func Listen(key string, port int) (net.Listener, error) {
	if port != 0 {
		return net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	}
	lo, hi, err := ephemeralRange(ephemeralRangeFile)
	if err != nil {
		return nil, err
	}
	candidates := portsOutside(lo, hi)
	h := fnv.New32a()
	h.Write([]byte(key))
	start := int(h.Sum32() % uint32(len(candidates)))
	var last error
	for i := range min(listenProbes, len(candidates)) {
		p := candidates[(start+i)%len(candidates)]
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", p))
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
		last = err
	}
	return nil, fmt.Errorf("no free port outside the ephemeral range %d-%d after %d tries (%w): set --egress-inspect-port", lo, hi, listenProbes, last)
}

// portsOutside lists the ports to pick from outside [lo, hi]: those above it (61000-65535 on
// a default host), where services seldom listen, so the agent takes no port a service started
// later wants; only if there are none, the unprivileged ones below it.
func portsOutside(lo, hi int) []int {
	var out []int
	for p := hi + 1; p <= 65535; p++ {
		out = append(out, p)
	}
	if len(out) == 0 {
		for p := 1024; p < lo; p++ {
			out = append(out, p)
		}
	}
	return out
}

// ephemeralRange reads the kernel's ephemeral port range ("32768\t60999").
func ephemeralRange(path string) (lo, hi int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ephemeral port range: %s holds %q", path, b)
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	if err != nil || lo > hi {
		return 0, 0, fmt.Errorf("ephemeral port range: %s holds %q", path, b)
	}
	if len(portsOutside(lo, hi)) == 0 {
		return 0, 0, fmt.Errorf("ephemeral port range %d-%d leaves no unprivileged port outside it: set --egress-inspect-port", lo, hi)
	}
	return lo, hi, nil
}
