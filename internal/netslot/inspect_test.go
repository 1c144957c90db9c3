package netslot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inspectorReply is what the stand-in inspector answers: the connection's
// original destination, as it reads it from conntrack.
func inspectorReply(orig netip.AddrPort) string { return "inspector " + orig.String() }

// newInspector listens on 0.0.0.0 at a free port in the root namespace,
// like the agent's inspector, and answers every connection with
// inspectorReply (or "inspector error: ..."). It returns the port.
func newInspector(tb testing.TB) uint16 {
	tb.Helper()
	ln := listenIn(tb, "", "0.0.0.0:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if orig, err := originalDst(c.(*net.TCPConn)); err != nil {
				fmt.Fprintf(c, "inspector error: %v\n", err)
			} else {
				fmt.Fprintf(c, "%s\n", inspectorReply(orig))
			}
			c.Close()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// originalDst reads the destination a redirected connection was opened
// to (SO_ORIGINAL_DST). The kernel fills a sockaddr_in, which has the size
// of the ipv6_mreq GetsockoptIPv6Mreq reads: family, port (network
// order), address.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var mreq *unix.IPv6Mreq
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", gerr)
	}
	b := mreq.Multiaddr
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}

// assertInspected dials to from the namespace at from and checks that the
// stand-in inspector answered with to as the original destination.
func assertInspected(tb testing.TB, from string, to netip.AddrPort) {
	tb.Helper()
	got, err := dialFrom(from, to.String(), okTimeout)
	if err != nil {
		tb.Errorf("dial %s: %v, want redirected to the inspector", to, err)
	} else if want := inspectorReply(to); got != want {
		tb.Errorf("dial %s: answered %q, want %q", to, got, want)
	}
}

// assertDirect dials to and checks that the server in the outside world
// answered, seeing the masqueraded address.
func assertDirect(tb testing.TB, from string, to netip.AddrPort, ow *outsideWorld) {
	tb.Helper()
	got, err := dialFrom(from, to.String(), okTimeout)
	if err != nil {
		tb.Errorf("dial %s: %v, want connected directly", to, err)
	} else if got != ow.hostAddr.String() {
		tb.Errorf("dial %s: answered %q, want the outside server seeing %s", to, got, ow.hostAddr)
	}
}

// udpRoundTrip sends a datagram from the namespace at from to to and
// returns the error of reading the answer (nil: an answer came).
func udpRoundTrip(tb testing.TB, from string, to netip.AddrPort) error {
	tb.Helper()
	var readErr error
	must(tb, inNetnsPath(from, func() error {
		c, err := net.Dial("udp4", to.String())
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(okTimeout))
		_, readErr = c.Read(make([]byte, 16))
		return nil
	}))
	return readErr
}

// assertUDPRefused sends a datagram to to and checks that the policy
// refused it with an ICMP error (see TestEgressRefusesUDP).
func assertUDPRefused(tb testing.TB, from string, to netip.AddrPort) {
	tb.Helper()
	if err := udpRoundTrip(tb, from, to); !errors.Is(err, syscall.ECONNREFUSED) {
		tb.Errorf("read after a datagram to %s: %v, want %v", to, err, syscall.ECONNREFUSED)
	}
}

// inspectWorld is a pool with an inspector and an outside world with two
// hosts, serving on ports 80, 443 and 8080.
type inspectWorld struct {
	p               *Pool
	ow              *outsideWorld
	allowed, denied netip.Addr
}

func newInspectWorld(t *testing.T) *inspectWorld {
	t.Helper()
	port := newInspector(t)
	p := newTestPool(t, func(c *Config) { c.InspectPort = port })
	ow := newOutsideWorld(t, p)
	hosts := ow.addHosts(t, 2)
	for _, h := range hosts {
		for _, port := range []int{80, 443, guestPort} {
			servePeerAddr(listenIn(t, ow.path, hostPort(h, port)))
		}
	}
	return &inspectWorld{p: p, ow: ow, allowed: hosts[0], denied: hosts[1]}
}

// policy denies everything but w.allowed.
func (w *inspectWorld) policy(inspect bool) Egress {
	return Egress{Deny: prefixes("0.0.0.0/0"), Allow: hostPrefixes(w.allowed), Inspect: inspect}
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// TestInspectRedirect: a slot with Inspect has its denied HTTP and HTTPS
// connections redirected to the inspector, which learns where they were
// going; the rest of its policy works as without Inspect, and no sandbox
// can connect to the inspector port itself.
func TestInspectRedirect(t *testing.T) {
	w := newInspectWorld(t)
	p, ow := w.p, w.ow
	inspectPort := p.cfg.InspectPort
	inspected := acquire(t, p, "sbx-inspected", WithEgress(w.policy(true)))
	refusing := acquire(t, p, "sbx-refusing", WithEgress(w.policy(false)))
	open := acquire(t, p, "sbx-open")
	if objs, want := egressObjects(t, p), append(slotInspectObjects(inspected, 2, 1), slotEgressObjects(refusing, 2, 1)...); !slices.Equal(objs, sorted(want)) {
		t.Errorf("egress objects %v, want %v", objs, sorted(want))
	}

	t.Run("inspect", func(t *testing.T) {
		for _, to := range []netip.AddrPort{ap(w.denied, 443), ap(w.denied, 80), ap(ow.addr, 443)} {
			t.Run("denied "+to.String()+" goes to the inspector", func(t *testing.T) {
				assertInspected(t, inspected.NetnsPath, to)
			})
		}
		for _, port := range []uint16{80, 443} {
			t.Run(fmt.Sprintf("allowed port %d goes out directly", port), func(t *testing.T) {
				assertDirect(t, inspected.NetnsPath, ap(w.allowed, port), ow)
			})
		}
		t.Run("denied other TCP port is refused", func(t *testing.T) {
			assertReach(t, inspected.NetnsPath, ap(w.denied, guestPort).String(), refused)
		})
		t.Run("denied UDP to port 443 is refused", func(t *testing.T) {
			assertUDPRefused(t, inspected.NetnsPath, ap(w.denied, 443))
		})
		t.Run("the inspector port itself is closed", func(t *testing.T) {
			assertReach(t, inspected.NetnsPath, ap(inspected.HostAddr, inspectPort).String(), dropped)
		})
		t.Run("another slot's inspector port is closed", func(t *testing.T) {
			assertReach(t, inspected.NetnsPath, ap(open.HostAddr, inspectPort).String(), dropped)
		})
		// A denied address in the pool goes to the inspector like any
		// other; the inspector must not dial it.
		t.Run("denied pool address goes to the inspector", func(t *testing.T) {
			assertInspected(t, inspected.NetnsPath, ap(open.GuestAddr, 443))
			if p.InspectAllowed(open.GuestAddr) {
				t.Errorf("InspectAllowed(%s) = true for another sandbox", open.GuestAddr)
			}
		})
	})
	t.Run("no inspect", func(t *testing.T) {
		for _, port := range []uint16{443, 80} {
			t.Run(fmt.Sprintf("denied port %d is refused", port), func(t *testing.T) {
				assertReach(t, refusing.NetnsPath, ap(w.denied, port).String(), refused)
			})
		}
		t.Run("allowed goes out directly", func(t *testing.T) {
			assertDirect(t, refusing.NetnsPath, ap(w.allowed, 443), ow)
		})
		t.Run("the inspector port is closed", func(t *testing.T) {
			assertReach(t, refusing.NetnsPath, ap(refusing.HostAddr, inspectPort).String(), dropped)
		})
	})
	// The inspector listens on every host address: its port is closed to the host's
	// other networks too.
	t.Run("from outside the pool the inspector port is closed", func(t *testing.T) {
		assertReach(t, ow.path, ap(ow.hostAddr, inspectPort).String(), dropped)
	})
	t.Run("no policy", func(t *testing.T) {
		assertDirect(t, open.NetnsPath, ap(w.denied, 443), ow)
		t.Run("the inspector port is closed", func(t *testing.T) {
			assertReach(t, open.NetnsPath, ap(open.HostAddr, inspectPort).String(), dropped)
		})
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestSetEgressInspect switches Inspect on and off on a live slot: each
// change takes effect for the next connection, and Release and Reclaim
// leave no inspect chain or element.
func TestSetEgressInspect(t *testing.T) {
	w := newInspectWorld(t)
	p := w.p
	ctx := context.Background()
	s := acquire(t, p, "sbx")
	denied := ap(w.denied, 443)

	steps := []struct {
		name    string
		egress  Egress
		want    string // "inspected", "refused" or "direct"
		objects []string
	}{
		{"deny, no inspect", w.policy(false), "refused", slotEgressObjects(s, 2, 1)},
		{"inspect on", w.policy(true), "inspected", slotInspectObjects(s, 2, 1)},
		{"inspect off", w.policy(false), "refused", slotEgressObjects(s, 2, 1)},
		{"inspect on, deny one address", Egress{Deny: hostPrefixes(w.denied), Inspect: true}, "inspected", slotInspectObjects(s, 0, 2)},
		{"no policy", Egress{}, "direct", nil},
		{"inspect on again", w.policy(true), "inspected", slotInspectObjects(s, 2, 1)},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := p.SetEgress(ctx, s, st.egress); err != nil {
				t.Fatalf("SetEgress: %v", err)
			}
			if got := s.Egress(); !egressEqual(got, st.egress) {
				t.Errorf("Egress() = %+v, want %+v", got, st.egress)
			}
			if objs := egressObjects(t, p); !slices.Equal(objs, st.objects) {
				t.Errorf("egress objects %v, want %v", objs, st.objects)
			}
			switch st.want {
			case "inspected":
				assertInspected(t, s.NetnsPath, denied)
			case "refused":
				assertReach(t, s.NetnsPath, denied.String(), refused)
			case "direct":
				assertDirect(t, s.NetnsPath, denied, w.ow)
			}
			assertDirect(t, s.NetnsPath, ap(w.allowed, 443), w.ow)
		})
	}

	t.Run("release", func(t *testing.T) {
		must(t, p.Release(ctx, s))
		assertNoSlotObjects(t, p)
	})
	t.Run("reclaim after crash", func(t *testing.T) {
		acquire(t, p, "sbx-1", WithEgress(w.policy(true)))
		acquire(t, p, "sbx-2", WithEgress(w.policy(true)))
		p2, err := New(p.cfg)
		must(t, err)
		must(t, p2.Reclaim(ctx))
		assertNoSlotObjects(t, p2)
		// The index, reused without a policy, is not redirected.
		s := acquire(t, p2, "sbx-plain")
		assertDirect(t, s.NetnsPath, denied, w.ow)
		must(t, p2.Release(ctx, s))
		p = p2
	})
	t.Run("stale policy without a slot", func(t *testing.T) {
		must(t, p.table.setEgress(0, p.cfg.hostIfName(0), w.policy(true)))
		s := acquire(t, p, "sbx-plain")
		if s.Index != 0 {
			t.Fatalf("index %d, want 0", s.Index)
		}
		assertDirect(t, s.NetnsPath, denied, w.ow)
		must(t, p.Release(ctx, s))
		assertNoSlotObjects(t, p)
	})
}

// TestInspectValidation: Inspect needs a Deny list and a pool with an
// inspect port; neither Acquire nor SetEgress accepts it otherwise, and a
// refused change leaves the policy in force.
func TestInspectValidation(t *testing.T) {
	ctx := context.Background()
	noInspector := newTestPool(t, nil)
	withInspector := newTestPool(t, func(c *Config) { c.InspectPort = 18443 })
	deny := prefixes("0.0.0.0/0")
	tests := []struct {
		name    string
		p       *Pool
		egress  Egress
		wantErr string
	}{
		{"inspect without deny", withInspector, Egress{Inspect: true}, "egress inspect needs a non-empty deny list"},
		{"inspect with only allow", withInspector, Egress{Allow: deny, Inspect: true}, "egress inspect needs a non-empty deny list"},
		{"inspect without an inspect port", noInspector, Egress{Deny: deny, Inspect: true}, "the pool has no Config.InspectPort"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Acquire(ctx, "sbx", WithEgress(tc.egress))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Acquire error %v, want one containing %q", err, tc.wantErr)
			}
			assertNoSlotObjects(t, tc.p)
			if tc.p.InUse() != 0 {
				t.Errorf("InUse = %d after failed Acquire", tc.p.InUse())
			}

			before := Egress{Deny: prefixes("198.51.100.0/24")}
			s := acquire(t, tc.p, "sbx", WithEgress(before))
			err = tc.p.SetEgress(ctx, s, tc.egress)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SetEgress error %v, want one containing %q", err, tc.wantErr)
			}
			if got := s.Egress(); !egressEqual(got, before) {
				t.Errorf("Egress() = %+v after refused change, want %+v", got, before)
			}
			if objs, want := egressObjects(t, tc.p), slotEgressObjects(s, 0, 2); !slices.Equal(objs, want) {
				t.Errorf("egress objects %v after refused change, want %v", objs, want)
			}
			must(t, tc.p.Release(ctx, s))
		})
	}
}

// TestInspectAllowed: the inspector may dial what the pool lets sandboxes
// reach, and nothing else.
func TestInspectAllowed(t *testing.T) {
	h1 := outsideHostNet.Addr().Next()
	p := newTestPool(t, func(c *Config) {
		c.AllowNets = prefixes("10.99.0.0/16", "10.0.0.0/8")
		c.DenyNets = append(slices.Clone(DefaultDenyNets), netip.PrefixFrom(h1.Next(), 32))
	})
	ow := newOutsideWorld(t, p)
	hosts := ow.addHosts(t, 3)
	s := acquire(t, p, "sbx")
	tests := []struct {
		addr string
		want bool
	}{
		{hosts[0].String(), true},
		{ow.addr.String(), true},
		{"::ffff:" + hosts[2].String(), true},
		{hosts[1].String(), false},          // in DenyNets
		{"172.16.0.1", false},               // in DefaultDenyNets
		{s.GuestAddr.String(), false},       // the pool, although AllowNets has 10/8
		{s.HostAddr.String(), false},        // the pool, and the host's own
		{p.cfg.CIDR.Addr().String(), false}, // the pool
		{ow.hostAddr.String(), false},       // the host's own, not in DenyNets
		{"127.0.0.1", false},                // loopback
		{"0.0.0.0", false},                  // unspecified: dials the host
		{"255.255.255.255", false},          // broadcast
		{"2001:db8::1", false},              // IPv6
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		if got := p.InspectAllowed(a); got != tc.want {
			t.Errorf("InspectAllowed(%s) = %v, want %v", a, got, tc.want)
		}
	}
	// 10.99.1.1 is in AllowNets and routed wherever the machine routes it;
	// AllowNets opens it when that is away from the host.
	if a := netip.MustParseAddr("10.99.1.1"); unicastRoute(a) && !p.InspectAllowed(a) {
		t.Errorf("InspectAllowed(%s) = false for an AllowNets address", a)
	}
}
