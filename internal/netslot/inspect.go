package netslot

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// InspectAllowed reports whether the pool lets sandboxes reach address a,
// for the egress inspector, which dials on a sandbox's behalf from the
// host, where the pool's rules do not apply. It reports false for:
//
//   - anything but IPv4 (sandboxes have no IPv6) and the unspecified address;
//   - the pool CIDR (sandboxes and the host ends of their slots), whatever
//     AllowNets says;
//   - the host's own addresses (a sandbox reaches at most
//     Config.AllowHostPorts there, and never through the inspector) and
//     broadcast addresses: a must have a unicast route, looked up in the
//     calling thread's network namespace, which must be the pool's (a
//     failed lookup also reports false);
//   - Config.DenyNets, unless Config.AllowNets includes a.
//
// It does not apply the sandbox's own Egress: that is what the inspector
// decides on.
func (p *Pool) InspectAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() || a.IsUnspecified() || p.cfg.CIDR.Contains(a) || !unicastRoute(a) {
		return false
	}
	for _, n := range p.cfg.AllowNets {
		if n.Contains(a) {
			return true
		}
	}
	for _, n := range p.cfg.DenyNets {
		if n.Contains(a) {
			return false
		}
	}
	return true
}

// unicastRoute reports whether the kernel routes packets to a as unicast,
// away from the host: not local (the host's own addresses, 127/8),
// broadcast, unreachable or unroutable.
func unicastRoute(a netip.Addr) bool {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return false
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			return false
		}
	}
	return true
}
