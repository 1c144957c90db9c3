package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxNameLen is DNS's limit on a name's text form without the trailing dot.
const maxNameLen = 253

// MatchDomain reports whether host matches one of the patterns: "example.com" matches exactly
// that name; "*.example.com" matches any name under example.com (a.example.com,
// a.b.example.com) but not example.com itself. Case-insensitive; a trailing dot on host is
// ignored. A host that is not a well-formed DNS name never matches, so a name carrying
// odd bytes cannot slip through a wildcard's suffix comparison.
func MatchDomain(patterns []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !validHostname(host) {
		return false
	}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSuffix(p, "."))
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			// The character before the suffix must be a dot, and at least one label
			// must come before it: "*.example.com" never matches "example.com" or
			// "badexample.com".
			if suffix != "" && len(host) > len(suffix)+1 &&
				strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if p != "" && host == p {
			return true
		}
	}
	return false
}

// ParseDomain checks a user's domain pattern (for the API to refuse bad input with a clear
// message): letters, digits, hyphens, dots; labels 1..63 chars, not starting/ending with a
// hyphen; total ≤ 253; at least two labels; optional leading "*."; no IP addresses. It
// returns the normalised form (lower-case, no trailing dot).
func ParseDomain(p string) (string, error) {
	norm := strings.ToLower(strings.TrimSuffix(p, "."))
	if norm == "*" || norm == "*." {
		return "", fmt.Errorf("domain pattern %q would allow every host; use a wildcard under a domain (like *.example.com), or drop denyOut to allow all", p)
	}
	name, wildcard := strings.CutPrefix(norm, "*.")
	if name == "" {
		return "", fmt.Errorf("domain pattern %q is empty", p)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", fmt.Errorf("domain pattern %q is an IP address: allowOut takes IP addresses and CIDR ranges as separate entries, not as domain patterns", p)
	}
	if len(norm) > maxNameLen {
		return "", fmt.Errorf("domain pattern %q is longer than %d characters", p, maxNameLen)
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		if wildcard {
			return "", fmt.Errorf("domain pattern %q would match a whole top-level domain; name at least two labels after \"*.\" (like *.example.com)", p)
		}
		return "", fmt.Errorf("domain pattern %q needs at least two labels (like example.com)", p)
	}
	for _, l := range labels {
		if err := checkLabel(l, false); err != nil {
			return "", fmt.Errorf("domain pattern %q: %w (only \"*.\" at the start may be a wildcard)", p, err)
		}
	}
	// An all-digit last label is how IPv4 literals and their odd spellings (1.2.3,
	// 0x7f.1, 010.0.0.1) look: resolvers may read them as addresses, so refuse them.
	if isDigits(labels[len(labels)-1]) {
		return "", fmt.Errorf("domain pattern %q ends in an all-digit label, which reads as an IP address", p)
	}
	return norm, nil
}

// validHostname reports whether h (lower-case, no trailing dot) is a well-formed DNS host
// name as a client would send it. Unlike patterns it accepts underscores, which appear in
// real names, and a single label.
func validHostname(h string) bool {
	if h == "" || len(h) > maxNameLen {
		return false
	}
	for l := range strings.SplitSeq(h, ".") {
		if checkLabel(l, true) != nil {
			return false
		}
	}
	return true
}

var errEmptyLabel = errors.New("has an empty label")

func checkLabel(l string, underscore bool) error {
	if l == "" {
		return errEmptyLabel
	}
	if len(l) > 63 {
		return fmt.Errorf("label %q is longer than 63 characters", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c == '_' && underscore:
		default:
			return fmt.Errorf("label %q has character %q; use letters, digits and hyphens", l, c)
		}
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
