package netslot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// MaxEgressPrefixes caps each list of an Egress, keeping the interval sets
// (and the one transaction that writes them) small.
const MaxEgressPrefixes = 256

// Egress is one sandbox's own outbound policy, on top of the pool's
// (Config.AllowNets/DenyNets, which always apply). Deny lists destinations
// the sandbox may not open connections to; Allow lists exceptions to Deny
// (allow wins, as in E2B). The zero value allows everything the pool
// allows, and so does a policy without Deny entries.
//
// Only IPv4 prefixes are accepted: slots have no IPv6, and the pool drops
// all of it. A denied destination is refused, not silently dropped: TCP
// gets a reset, anything else an ICMP "port unreachable", so a
// client in the sandbox fails at once. Allow never opens what the pool
// denies (private ranges, other sandboxes, the pool CIDR), and neither list
// touches the host's own ports (Config.AllowHostPorts), which are not
// forwarded traffic.
//
// The policy is checked on every packet the sandbox sends, with no
// shortcut for established connections, so a tighter policy also cuts
// connections that are already open.
//
// With Inspect, TCP connections to ports 80 and 443 of denied destinations
// are not refused but redirected to the pool's inspector
// (Config.InspectPort), which decides on the name the client asks for
// (HTTP Host, TLS SNI). Everything else a policy denies is still refused.
type Egress struct {
	Allow []netip.Prefix `json:"allow,omitempty"`
	Deny  []netip.Prefix `json:"deny,omitempty"`
	// Inspect redirects denied TCP connections to ports 80 and 443 to Config.InspectPort
	// (for domain allow-lists) instead of refusing them. Needs Config.InspectPort and a non-empty Deny.
	Inspect bool `json:"inspect,omitempty"`
}

// WithEgress gives the slot the egress policy e, in force before the slot
// can carry traffic. An invalid policy makes Acquire fail before it builds
// anything.
func WithEgress(e Egress) AcquireOption {
	return func(o *acquireOptions) {
		o.egress, o.egressErr = e.normalize()
	}
}

// SetEgress replaces the egress policy of s, a slot held from p, in one
// nftables transaction: every packet meets either the old policy or the
// new one. On error the old policy stays in force.
func (p *Pool) SetEgress(ctx context.Context, s *Slot, e Egress) error {
	if s == nil {
		return errors.New("netslot: set egress of nil slot")
	}
	e, err := e.normalize()
	if err == nil {
		err = p.cfg.checkEgress(e)
	}
	if err != nil {
		return fmt.Errorf("set egress of slot %d of %s: %w", s.Index, s.SandboxID, err)
	}
	// Held until the policy is written: Release waits for it before the
	// teardown, which would otherwise race with this write.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("set egress of slot %d of %s: %w", s.Index, s.SandboxID, err)
	}
	p.mu.Lock()
	held := p.slots[s.Index] == s
	p.mu.Unlock()
	if !held {
		return fmt.Errorf("set egress of slot %d of %s: not held by this pool", s.Index, s.SandboxID)
	}
	if err := p.table.setEgress(s.Index, s.HostIf, e); err != nil {
		return fmt.Errorf("set egress of slot %d of %s: %w", s.Index, s.SandboxID, err)
	}
	s.egress = e
	p.log.Debug("slot egress set", "slot", s.Index, "sandbox", s.SandboxID, "allow", len(e.Allow), "deny", len(e.Deny), "inspect", e.Inspect)
	return nil
}

// Egress returns the slot's egress policy as in force: prefixes masked,
// duplicates removed.
func (s *Slot) Egress() Egress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Egress{Allow: slices.Clone(s.egress.Allow), Deny: slices.Clone(s.egress.Deny), Inspect: s.egress.Inspect}
}

// normalize checks e and returns a copy with every prefix masked and
// duplicates removed.
func (e Egress) normalize() (Egress, error) {
	allow, err := egressPrefixes("allow", e.Allow)
	if err != nil {
		return Egress{}, err
	}
	deny, err := egressPrefixes("deny", e.Deny)
	if err != nil {
		return Egress{}, err
	}
	// Refused rather than dropped: a caller relying on Inspect for a domain
	// allow-list but with nothing denied would restrict nothing at all.
	if e.Inspect && len(deny) == 0 {
		return Egress{}, errors.New("netslot: egress inspect needs a non-empty deny list: only denied destinations are inspected")
	}
	return Egress{Allow: allow, Deny: deny, Inspect: e.Inspect}, nil
}

// checkEgress checks what of a normalised policy depends on the pool.
func (c Config) checkEgress(e Egress) error {
	if e.Inspect && c.InspectPort == 0 {
		return errors.New("netslot: egress inspect needs an inspector, but the pool has no Config.InspectPort")
	}
	return nil
}

func egressPrefixes(list string, in []netip.Prefix) ([]netip.Prefix, error) {
	if len(in) > MaxEgressPrefixes {
		return nil, fmt.Errorf("netslot: egress %s list has %d prefixes, at most %d are allowed", list, len(in), MaxEgressPrefixes)
	}
	var out []netip.Prefix
	for i, n := range in {
		if !n.IsValid() {
			return nil, fmt.Errorf("netslot: egress %s entry %d is not a valid prefix", list, i)
		}
		if !n.Addr().Is4() {
			return nil, fmt.Errorf("netslot: egress %s entry %s is not an IPv4 prefix (sandboxes have no IPv6)", list, n)
		}
		if n = n.Masked(); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}
