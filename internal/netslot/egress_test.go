package netslot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// reach is what a connection attempt from a sandbox must come to.
type reach int

const (
	connects reach = iota
	// refused: the sandbox's policy rejects it with a TCP reset, so the
	// dial fails at once with "connection refused".
	refused
	// dropped: a pool rule discards it silently; the dial gets no answer.
	dropped
)

func (r reach) String() string { return [...]string{"connects", "refused", "dropped"}[r] }

// assertReach dials to from the namespace at from and checks the outcome.
// A refused dial gets okTimeout, so a policy that dropped instead of
// rejecting would show as a timeout, not a refusal.
func assertReach(tb testing.TB, from, to string, want reach) {
	tb.Helper()
	start := time.Now()
	switch want {
	case connects:
		if _, err := dialFrom(from, to, okTimeout); err != nil {
			tb.Errorf("dial %s: %v, want connected", to, err)
		}
	case refused:
		peer, err := dialFrom(from, to, okTimeout)
		if err == nil {
			tb.Errorf("connected to %s (server saw %s), want refused", to, peer)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			tb.Errorf("dial %s: %v after %v, want connection refused", to, err, time.Since(start).Round(time.Millisecond))
		}
	case dropped:
		if peer, err := dialFrom(from, to, blockedTimeout); err == nil {
			tb.Errorf("connected to %s (server saw %s), want blocked", to, peer)
		}
	}
}

// hostPrefixes returns the /32 of each address.
func hostPrefixes(as ...netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range as {
		out = append(out, netip.PrefixFrom(a, 32))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestEgressPolicy checks each kind of policy against several internet
// hosts, one slot per policy, all held at once.
func TestEgressPolicy(t *testing.T) {
	p := newTestPool(t, nil)
	ow := newOutsideWorld(t, p)
	hosts := ow.addHosts(t, 3)
	dests := append([]netip.Addr{ow.addr}, hosts...)
	for _, d := range dests {
		servePeerAddr(listenIn(t, ow.path, hostPort(d, guestPort)))
	}

	net24 := netip.PrefixFrom(outsideHostNet.Addr(), 24).String()
	tests := []struct {
		name   string
		egress Egress
		reach  []netip.Addr // the other dests are refused
	}{
		{"no policy", Egress{}, dests},
		{"allow without deny restricts nothing", Egress{Allow: hostPrefixes(hosts[0])}, dests},
		{"deny all (no internet access)", Egress{Deny: prefixes("0.0.0.0/0")}, nil},
		{"deny all but one address", Egress{Deny: prefixes("0.0.0.0/0"), Allow: hostPrefixes(hosts[0])}, hosts[:1]},
		{"deny one address", Egress{Deny: hostPrefixes(hosts[1])}, []netip.Addr{ow.addr, hosts[0], hosts[2]}},
		{"allow inside a wider deny", Egress{Deny: prefixes(net24), Allow: []netip.Prefix{netip.PrefixFrom(hosts[1], 31)}}, []netip.Addr{ow.addr, hosts[1], hosts[2]}},
		// Every destination here is in the upper half: a range running to
		// the top of the address space, and one that ends below them.
		{"deny the upper half of the address space", Egress{Deny: prefixes("128.0.0.0/1")}, nil},
		{"deny the lower half of the address space", Egress{Deny: prefixes("0.0.0.0/1")}, dests},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := acquire(t, p, fmt.Sprintf("sbx-%d", i), WithEgress(tc.egress))
			for _, d := range dests {
				want := refused
				if slices.Contains(tc.reach, d) {
					want = connects
				}
				t.Run(fmt.Sprintf("%s %s", want, d), func(t *testing.T) {
					assertReach(t, s.NetnsPath, hostPort(d, guestPort), want)
				})
			}
		})
	}
}

// TestEgressRefusesUDP: what is not TCP gets an ICMP "port unreachable"
// (ECONNREFUSED on a connected socket) instead of vanishing: the one ICMP
// error gVisor's netstack passes to UDP sockets, so a resolver in a denied
// sandbox gives up at once instead of waiting out its timeouts. The outside
// world echoes datagrams, so a datagram that got through would come back.
func TestEgressRefusesUDP(t *testing.T) {
	p := newTestPool(t, nil)
	ow := newOutsideWorld(t, p)
	var pc net.PacketConn
	must(t, inNetnsPath(ow.path, func() (err error) {
		pc, err = net.ListenPacket("udp4", hostPort(ow.addr, guestPort))
		return err
	}))
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	denied := acquire(t, p, "denied", WithEgress(Egress{Deny: prefixes("0.0.0.0/0")}))
	open := acquire(t, p, "open")
	for _, tc := range []struct {
		slot *Slot
		want error // nil: the echo came back
	}{{open, nil}, {denied, syscall.ECONNREFUSED}} {
		readErr := udpRoundTrip(t, tc.slot.NetnsPath, netip.AddrPortFrom(ow.addr, guestPort))
		if tc.want == nil && readErr != nil || tc.want != nil && !errors.Is(readErr, tc.want) {
			t.Errorf("%s: read after a datagram: %v, want %v", tc.slot.SandboxID, readErr, tc.want)
		}
	}
}

// TestEgressAllowCannotOpenPoolDenyNets: a sandbox's Allow only lifts its
// own Deny; other sandboxes, the host and the pool's DenyNets stay closed,
// and its Deny wins over the pool's AllowNets.
func TestEgressAllowCannotOpenPoolDenyNets(t *testing.T) {
	// The pool opens the first outside host and closes the second (addHosts
	// numbers them from the start of outsideHostNet).
	h1, h2 := outsideHostNet.Addr().Next(), outsideHostNet.Addr().Next().Next()
	p := newTestPool(t, func(c *Config) {
		c.AllowNets = hostPrefixes(h1)
		c.DenyNets = append(slices.Clone(DefaultDenyNets), hostPrefixes(h2)...)
	})
	ow := newOutsideWorld(t, p)
	hosts := ow.addHosts(t, 3)
	if hosts[0] != h1 || hosts[1] != h2 {
		t.Fatalf("outside hosts %v, want %s and %s first", hosts, h1, h2)
	}
	for _, d := range append([]netip.Addr{ow.addr}, hosts...) {
		servePeerAddr(listenIn(t, ow.path, hostPort(d, guestPort)))
	}
	greedy := acquire(t, p, "sbx-greedy", WithEgress(Egress{
		Deny:  prefixes("0.0.0.0/0"),
		Allow: append(prefixes("10.0.0.0/8", p.cfg.CIDR.String(), "203.0.113.0/24"), hostPrefixes(h2)...),
	}))
	other := acquire(t, p, "sbx-other")
	strict := acquire(t, p, "sbx-strict", WithEgress(Egress{Deny: hostPrefixes(h1)}))
	servePeerAddr(listenIn(t, other.NetnsPath, hostPort(other.GuestAddr, guestPort)))
	servePeerAddr(listenIn(t, "", hostPort(other.HostAddr, guestPort)))
	servePeerAddr(listenIn(t, "", hostPort(ow.hostAddr, guestPort)))

	tests := []struct {
		name string
		from *Slot
		to   netip.Addr
		want reach
	}{
		{"allowed internet host", greedy, ow.addr, connects},
		{"not allowed internet host", greedy, hosts[2], refused},
		{"another sandbox, allowed by 10/8 and the pool CIDR", greedy, other.GuestAddr, dropped},
		{"another slot's host address", greedy, other.HostAddr, dropped},
		{"a host address on another interface", greedy, ow.hostAddr, dropped},
		{"a pool DenyNets address", greedy, hosts[1], dropped},
		{"pool AllowNets address, denied by the sandbox", strict, hosts[0], refused},
		{"pool AllowNets address, no policy", other, hosts[0], connects},
		{"pool DenyNets address, no policy", other, hosts[1], dropped},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertReach(t, tc.from.NetnsPath, hostPort(tc.to, guestPort), tc.want)
		})
	}
}

// TestSetEgress changes a live slot's policy back and forth and checks each
// state with real connections, including one opened before the change,
// while a second slot is unaffected.
func TestSetEgress(t *testing.T) {
	p := newTestPool(t, nil)
	ow := newOutsideWorld(t, p)
	hosts := ow.addHosts(t, 1)
	internet := hostPort(ow.addr, guestPort)
	other := hostPort(hosts[0], guestPort)
	servePeerAddr(listenIn(t, ow.path, internet))
	servePeerAddr(listenIn(t, ow.path, other))
	echoAddr := hostPort(ow.addr, guestPort+1)
	serveEcho(listenIn(t, ow.path, echoAddr))

	a := acquire(t, p, "sbx-a")
	b := acquire(t, p, "sbx-b")
	ctx := context.Background()

	// A connection opened while everything is allowed.
	var conn net.Conn
	must(t, inNetnsPath(a.NetnsPath, func() (err error) {
		conn, err = net.DialTimeout("tcp4", echoAddr, okTimeout)
		return err
	}))
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo := func(msg string) error {
		conn.SetDeadline(time.Now().Add(okTimeout))
		if _, err := fmt.Fprintf(conn, "%s\n", msg); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != msg {
			err = fmt.Errorf("echo %q, want %q", line, msg)
		}
		return err
	}
	must(t, echo("before"))

	denyAll := Egress{Deny: prefixes("0.0.0.0/0")}
	steps := []struct {
		name          string
		egress        Egress
		internet, oth reach
		objects       []string // egressObjects
	}{
		{"deny all", denyAll, refused, refused, slotEgressObjects(a, 0, 1)},
		{"deny one address", Egress{Deny: hostPrefixes(hosts[0])}, connects, refused, slotEgressObjects(a, 0, 2)},
		{"deny all but one", Egress{Deny: denyAll.Deny, Allow: hostPrefixes(hosts[0])}, refused, connects, slotEgressObjects(a, 2, 1)},
		{"no policy", Egress{}, connects, connects, nil},
		{"deny all again", denyAll, refused, refused, slotEgressObjects(a, 0, 1)},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := p.SetEgress(ctx, a, st.egress); err != nil {
				t.Fatalf("SetEgress: %v", err)
			}
			if got := a.Egress(); !egressEqual(got, st.egress) {
				t.Errorf("Egress() = %v, want %v", got, st.egress)
			}
			if objs := egressObjects(t, p); !slices.Equal(objs, st.objects) {
				t.Errorf("egress objects %v, want %v", objs, st.objects)
			}
			assertReach(t, a.NetnsPath, internet, st.internet)
			assertReach(t, a.NetnsPath, other, st.oth)
			assertReach(t, b.NetnsPath, internet, connects)
			assertReach(t, b.NetnsPath, other, connects)
			if i == 0 {
				// The policy applies per packet: the open connection is cut
				// with a reset at its next packet, not left to hang.
				if err := echo("after"); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("open connection after deny all: %v, want %v", err, syscall.ECONNRESET)
				}
			}
		})
	}

	// Neither a cancelled context nor an invalid policy changes anything.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.SetEgress(cancelled, a, Egress{}); err == nil {
		t.Error("SetEgress with a cancelled context succeeded")
	}
	if err := p.SetEgress(ctx, a, Egress{Deny: prefixes("::/0")}); err == nil {
		t.Error("SetEgress with an IPv6 prefix succeeded")
	}
	if got := a.Egress(); !egressEqual(got, denyAll) {
		t.Errorf("Egress() = %v after failed changes, want %v", got, denyAll)
	}
	assertReach(t, a.NetnsPath, internet, refused)

	must(t, p.Release(ctx, a))
	if err := p.SetEgress(ctx, a, Egress{}); err == nil {
		t.Error("SetEgress on a released slot succeeded")
	}
	if objs := egressObjects(t, p); len(objs) != 0 {
		t.Errorf("egress objects %v after Release", objs)
	}
}

// serveEcho sends every line back on the same connection.
func serveEcho(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func egressEqual(a, b Egress) bool {
	return slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny) && a.Inspect == b.Inspect
}

// TestEgressLeavesNothing: Release, a crashed pool's Reclaim and a stale
// policy left without its slot all end with no egress chain or element,
// and the index, reused without a policy, is not restricted.
func TestEgressLeavesNothing(t *testing.T) {
	p := newTestPool(t, nil)
	ow := newOutsideWorld(t, p)
	internet := hostPort(ow.addr, guestPort)
	servePeerAddr(listenIn(t, ow.path, internet))
	deny := WithEgress(Egress{Deny: prefixes("0.0.0.0/0")})
	ctx := context.Background()

	unrestricted := func(t *testing.T) {
		t.Helper()
		s := acquire(t, p, "sbx-plain")
		if s.Index != 0 {
			t.Fatalf("index %d, want 0 reused", s.Index)
		}
		assertReach(t, s.NetnsPath, internet, connects)
		must(t, p.Release(ctx, s))
	}

	t.Run("release", func(t *testing.T) {
		s := acquire(t, p, "sbx-denied", deny)
		if objs, want := egressObjects(t, p), slotEgressObjects(s, 0, 1); !slices.Equal(objs, want) {
			t.Fatalf("after Acquire: egress objects %v, want %v", objs, want)
		}
		assertReach(t, s.NetnsPath, internet, refused)
		must(t, p.Release(ctx, s))
		assertNoSlotObjects(t, p)
		unrestricted(t)
	})
	t.Run("reclaim after crash", func(t *testing.T) {
		acquire(t, p, "sbx-denied", deny)
		acquire(t, p, "sbx-denied-2", deny)
		// A new Pool for the same prefix finds the slots by name only.
		p2, err := New(p.cfg)
		must(t, err)
		must(t, p2.Reclaim(ctx))
		assertNoSlotObjects(t, p2)
		p = p2
		unrestricted(t)
	})
	t.Run("stale policy without a slot", func(t *testing.T) {
		// What only a failed teardown could leave: the policy of index 0
		// with no devices or namespace, which clearLeftovers does not see.
		must(t, p.table.setEgress(0, p.cfg.hostIfName(0), Egress{Deny: prefixes("0.0.0.0/0")}))
		unrestricted(t)
		assertNoSlotObjects(t, p)
	})
}

// TestEgressValidation: invalid policies fail before anything is built,
// with an error that names the problem; the largest valid policy works.
func TestEgressValidation(t *testing.T) {
	p := newTestPool(t, nil)
	tooMany := make([]netip.Prefix, MaxEgressPrefixes+1)
	for i := range tooMany {
		tooMany[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)
	}
	tests := []struct {
		name    string
		egress  Egress
		wantErr string
	}{
		{"IPv6 deny", Egress{Deny: prefixes("2001:db8::/32")}, "deny entry 2001:db8::/32 is not an IPv4 prefix"},
		{"IPv6 allow", Egress{Deny: prefixes("0.0.0.0/0"), Allow: prefixes("::/0")}, "allow entry ::/0 is not an IPv4 prefix"},
		{"IPv4-mapped IPv6", Egress{Deny: prefixes("::ffff:198.51.100.1/128")}, "is not an IPv4 prefix"},
		{"zero prefix", Egress{Deny: []netip.Prefix{{}}}, "deny entry 0 is not a valid prefix"},
		{"too many denies", Egress{Deny: tooMany}, fmt.Sprintf("deny list has %d prefixes, at most %d", MaxEgressPrefixes+1, MaxEgressPrefixes)},
		{"too many allows", Egress{Deny: prefixes("0.0.0.0/0"), Allow: tooMany}, "allow list has"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Acquire(context.Background(), "sbx", WithEgress(tc.egress))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Acquire error %v, want one containing %q", err, tc.wantErr)
			}
			assertNoSlotObjects(t, p)
			if p.InUse() != 0 {
				t.Errorf("InUse = %d after failed Acquire", p.InUse())
			}
		})
	}

	t.Run("largest policy, normalised", func(t *testing.T) {
		ow := newOutsideWorld(t, p)
		hosts := ow.addHosts(t, 2)
		for _, h := range hosts {
			servePeerAddr(listenIn(t, ow.path, hostPort(h, guestPort)))
		}
		// The full lists, one entry unmasked, one repeated; the 256 /32s of
		// 198.18.0.0/24 merge into one range.
		deny, allow := slices.Clone(tooMany[:MaxEgressPrefixes]), slices.Clone(tooMany[:MaxEgressPrefixes])
		deny[MaxEgressPrefixes-1] = netip.PrefixFrom(hosts[0], 24)
		deny[MaxEgressPrefixes-2] = deny[0]
		allow[MaxEgressPrefixes-1] = netip.PrefixFrom(hosts[1], 32)
		s := acquire(t, p, "sbx-big", WithEgress(Egress{Deny: deny, Allow: allow}))
		got := s.Egress()
		if len(got.Deny) != MaxEgressPrefixes-1 || got.Deny[len(got.Deny)-1] != netip.PrefixFrom(hosts[0], 24).Masked() || len(got.Allow) != MaxEgressPrefixes {
			t.Errorf("Egress() has %d deny (last %s), %d allow; want %d, %s, %d", len(got.Deny), got.Deny[len(got.Deny)-1],
				len(got.Allow), MaxEgressPrefixes-1, netip.PrefixFrom(hosts[0], 24).Masked(), MaxEgressPrefixes)
		}
		// deny: 198.18.0.0-198.18.0.253 and the /24; allow: 198.18.0.0-.254
		// and hosts[1]; two elements (start, end) per range.
		if objs, want := egressObjects(t, p), slotEgressObjects(s, 4, 4); !slices.Equal(objs, want) {
			t.Errorf("egress objects %v, want %v", objs, want)
		}
		assertReach(t, s.NetnsPath, hostPort(hosts[0], guestPort), refused)
		assertReach(t, s.NetnsPath, hostPort(hosts[1], guestPort), connects)
		must(t, p.Release(context.Background(), s))
		assertNoSlotObjects(t, p)
	})
}

// TestIntervalElements checks the interval set encoding on its own: ranges
// sorted and merged (the kernel refuses overlaps), end elements one past
// the range, none past the top of the address space.
func TestIntervalElements(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"10.0.0.1/32"}, []string{"10.0.0.1", "10.0.0.2 end"}},
		{[]string{"0.0.0.0/0"}, []string{"0.0.0.0"}},
		{[]string{"255.255.255.255/32"}, []string{"255.255.255.255"}},
		{[]string{"128.0.0.0/1", "0.0.0.0/1"}, []string{"0.0.0.0"}},
		{[]string{"10.1.0.0/16", "10.0.0.0/8"}, []string{"10.0.0.0", "11.0.0.0 end"}},
		{[]string{"10.0.0.128/25", "10.0.0.0/25"}, []string{"10.0.0.0", "10.0.1.0 end"}},
		{[]string{"192.168.0.0/16", "10.0.0.0/8"}, []string{"10.0.0.0", "11.0.0.0 end", "192.168.0.0", "192.169.0.0 end"}},
	}
	for _, tc := range tests {
		var got []string
		for _, e := range intervalElements(prefixes(tc.in...)) {
			s := netip.AddrFrom4([4]byte(e.Key)).String()
			if e.IntervalEnd {
				s += " end"
			}
			got = append(got, s)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("intervalElements(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestSetEgressRacingRelease: a policy change racing the slot's Release
// either lands before the teardown or is refused; it never outlives the
// slot.
func TestSetEgressRacingRelease(t *testing.T) {
	p := newTestPool(t, nil)
	ctx := context.Background()
	const n = 6
	var wg sync.WaitGroup
	for i := range n {
		s := acquire(t, p, fmt.Sprintf("sbx-%d", i))
		wg.Go(func() { p.SetEgress(ctx, s, Egress{Deny: prefixes("0.0.0.0/0")}) })
		wg.Go(func() {
			if err := p.Release(ctx, s); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	assertNoSlotObjects(t, p)
}
