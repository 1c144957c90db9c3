package egressproxy

import (
	"fmt"
	"net/netip"
	"strings"
)

// checkHostName accepts a name an allowOut rule could match or a dialer could resolve: an IP
// literal, or DNS labels of letters, digits, '-' and '_'. Anything else a sandbox sends as a
// Host header or SNI (spaces left by a folded header, control bytes, a second port) is
// refused, not matched or resolved: what the proxy checks must be what a server reads.
func checkHostName(host string) error {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("host %q is not a host name", host)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q is not a host name", host)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q is not a host name", host)
			}
		}
	}
	return nil
}
