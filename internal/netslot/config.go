package netslot

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Defaults used when a Config field is left zero.
var (
	DefaultCIDR   = netip.MustParsePrefix("10.200.0.0/16")
	DefaultPrefix = "hearth"

	// DefaultDenyNets are the destinations a sandbox may not reach unless
	// Config.AllowNets lets it: private, shared (CGNAT), link-local and
	// multicast ranges, i.e. the networks a host is typically attached to
	// besides the internet.
	DefaultDenyNets = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/4"),
	}
)

// maxPrefixLen keeps "<prefix>-h<index>" within IFNAMSIZ-1 (15) bytes for
// the largest index a /16 pool has (16383).
const maxPrefixLen = 8

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

// Config configures a Pool. Two agents on one machine must use different
// Prefix and CIDR values; everything a Pool creates carries its prefix.
type Config struct {
	// CIDR is the IPv4 address pool, cut into /30 blocks (one per slot).
	CIDR netip.Prefix
	// Prefix names the nftables table, the namespaces (<prefix>-<i>), the
	// host veths (<prefix>-h<i>) and the IFBs (<prefix>-i<i>). Lower-case letters and digits, at most 8.
	Prefix string
	// AllowHostPorts are TCP and UDP ports on the host's own addresses that
	// sandboxes may reach (for example a DNS forwarder). Everything else on
	// the host, including the agent's API, is closed to them.
	AllowHostPorts []uint16
	// DenyNets are destinations sandboxes may not reach; nil means
	// DefaultDenyNets. The pool CIDR is always denied.
	DenyNets []netip.Prefix
	// AllowNets are exceptions to DenyNets.
	AllowNets []netip.Prefix
	// InspectPort, when non-zero, is the TCP port of the agent's egress inspector on the
	// host ends of the slots. Slots whose Egress has Inspect set get their TCP connections to
	// ports 80 and 443 of destinations their policy denies redirected there.
	// Sandboxes cannot connect to it directly, so it must not be in AllowHostPorts.
	InspectPort uint16
	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if !c.CIDR.IsValid() {
		c.CIDR = DefaultCIDR
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DenyNets == nil {
		c.DenyNets = DefaultDenyNets
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.CIDR = c.CIDR.Masked()
	if !c.CIDR.Addr().Is4() || c.CIDR.Bits() > 30 {
		return c, fmt.Errorf("netslot: pool %s must be an IPv4 prefix of /30 or larger", c.CIDR)
	}
	if c.CIDR.Bits() < 16 {
		// More slots than the interface names can number.
		return c, fmt.Errorf("netslot: pool %s is larger than /16", c.CIDR)
	}
	if len(c.Prefix) > maxPrefixLen || !prefixRE.MatchString(c.Prefix) {
		return c, fmt.Errorf("netslot: prefix %q must be 1-%d lower-case letters or digits, starting with a letter", c.Prefix, maxPrefixLen)
	}
	for _, n := range append(append([]netip.Prefix{}, c.DenyNets...), c.AllowNets...) {
		if !n.IsValid() || !n.Addr().Is4() {
			return c, fmt.Errorf("netslot: network %s is not an IPv4 prefix", n)
		}
	}
	if c.InspectPort != 0 && slices.Contains(c.AllowHostPorts, c.InspectPort) {
		return c, fmt.Errorf("netslot: inspect port %d is also in AllowHostPorts: sandboxes could connect to the inspector directly", c.InspectPort)
	}
	return c, nil
}

// capacity is the number of /30 blocks in the pool.
func (c Config) capacity() int { return 1 << (32 - c.CIDR.Bits() - 2) }

// block returns the /30 of slot i.
func (c Config) block(i int) netip.Prefix {
	b := c.CIDR.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 30)
}

func (c Config) netnsName(i int) string  { return c.Prefix + "-" + strconv.Itoa(i) }
func (c Config) hostIfName(i int) string { return c.Prefix + "-h" + strconv.Itoa(i) }
func (c Config) ifbName(i int) string    { return c.Prefix + "-i" + strconv.Itoa(i) }

// parseIndex returns i when name is exactly head+strconv.Itoa(i); other
// prefixes that merely start with ours ("hearth2-h1") never match.
func parseIndex(name, head string) (int, bool) {
	rest, ok := strings.CutPrefix(name, head)
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(rest)
	if err != nil {
		return 0, false
	}
	return i, true
}
