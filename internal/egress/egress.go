// Package egress parses the entries of a sandbox's outbound policy, as users write them in
// E2B's network.allowOut and denyOut, into the IPv4 prefixes the host enforces. The control
// plane uses it to refuse bad input with a clear message, the agent as its own contract.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxEntries bounds each list: every entry is a firewall rule on the host.
const MaxEntries = 256

// AllTraffic is E2B's ALL_TRAFFIC: denying it denies the internet.
const AllTraffic = "0.0.0.0/0"

// ErrDomain marks entries that are domain names, which the host cannot filter on.
var ErrDomain = errors.New("is a domain name: Hearth filters outbound traffic by IPv4 address and CIDR range only; list the addresses the domain resolves to instead")

// ParsePrefix reads one entry: an IPv4 address (one host) or an IPv4 CIDR range. The
// result is masked, so "10.1.2.3/8" reads as 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("is not an IPv4 CIDR range (like 10.0.0.0/8)")
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			if looksLikeDomain(s) {
				return p, ErrDomain
			}
			return p, fmt.Errorf("is not an IPv4 address or CIDR range")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return p, fmt.Errorf("is IPv6: sandboxes have no IPv6 egress, it is always blocked")
	}
	return p.Masked(), nil
}

// ParseList reads a list of entries; errors name the entry.
func ParseList(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxEntries {
		return nil, fmt.Errorf("%d entries, at most %d are allowed", len(in), MaxEntries)
	}
	var out []netip.Prefix
	for _, s := range in {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// looksLikeDomain: letters, digits, dots and dashes with at least one letter and one dot,
// or a wildcard like *.example.com.
func looksLikeDomain(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if !strings.Contains(s, ".") {
		return false
	}
	letter := false
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letter = true
		case r >= '0' && r <= '9', r == '.', r == '-':
		default:
			return false
		}
	}
	return letter
}
