package netslot

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	guestPort = 8080
	// blockedTimeout bounds a dial that the rules are expected to drop.
	blockedTimeout = 400 * time.Millisecond
	okTimeout      = 3 * time.Second
)

// TestIsolationAndEgress proves, with real servers, who can reach whom:
// the host reaches every sandbox, sandboxes reach neither each other nor
// the host (save allowed ports), and they reach the outside world through
// NAT.
func TestIsolationAndEgress(t *testing.T) {
	allowedPort := 20000 + rand.IntN(20000)
	p := newTestPool(t, func(c *Config) { c.AllowHostPorts = []uint16{uint16(allowedPort)} })
	a := acquire(t, p, "sbx-a")
	b := acquire(t, p, "sbx-b")
	ow := newOutsideWorld(t, p)

	servePeerAddr(listenIn(t, a.NetnsPath, hostPort(a.GuestAddr, guestPort)))
	servePeerAddr(listenIn(t, b.NetnsPath, hostPort(b.GuestAddr, guestPort)))
	servePeerAddr(listenIn(t, ow.path, hostPort(ow.addr, guestPort)))
	// Servers on the host's own slot addresses: the API port stand-in and a
	// port the config allows.
	servePeerAddr(listenIn(t, "", hostPort(a.HostAddr, guestPort)))
	servePeerAddr(listenIn(t, "", hostPort(a.HostAddr, allowedPort)))
	servePeerAddr(listenIn(t, "", hostPort(b.HostAddr, guestPort)))
	servePeerAddr(listenIn(t, "", hostPort(ow.hostAddr, guestPort)))

	tests := []struct {
		name     string
		from     string // netns path, "" = host
		to       string
		wantPeer string // "" = must not connect
	}{
		{"host to sandbox A", "", hostPort(a.GuestAddr, guestPort), a.HostAddr.String()},
		{"host to sandbox B", "", hostPort(b.GuestAddr, guestPort), b.HostAddr.String()},
		{"A to B's guest address", a.NetnsPath, hostPort(b.GuestAddr, guestPort), ""},
		{"B to A's guest address", b.NetnsPath, hostPort(a.GuestAddr, guestPort), ""},
		{"A to its gateway's closed port", a.NetnsPath, hostPort(a.HostAddr, guestPort), ""},
		{"A to B's host address", a.NetnsPath, hostPort(b.HostAddr, guestPort), ""},
		{"A to a host address on another interface", a.NetnsPath, hostPort(ow.hostAddr, guestPort), ""},
		{"A to an allowed host port", a.NetnsPath, hostPort(a.HostAddr, allowedPort), a.GuestAddr.String()},
		{"A to the outside world is masqueraded", a.NetnsPath, hostPort(ow.addr, guestPort), ow.hostAddr.String()},
		{"B to the outside world is masqueraded", b.NetnsPath, hostPort(ow.addr, guestPort), ow.hostAddr.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timeout := okTimeout
			if tc.wantPeer == "" {
				timeout = blockedTimeout
			}
			peer, err := dialFrom(tc.from, tc.to, timeout)
			switch {
			case tc.wantPeer == "" && err == nil:
				t.Fatalf("connected to %s (server saw %s), want blocked", tc.to, peer)
			case tc.wantPeer != "" && err != nil:
				t.Fatalf("dial %s: %v", tc.to, err)
			case tc.wantPeer != "" && peer != tc.wantPeer:
				t.Fatalf("server saw peer %s, want %s", peer, tc.wantPeer)
			}
		})
	}
}

// TestSpoofedSourceDropped: a sandbox that forges its source address (root
// in a VM can) gets nothing out, neither as another sandbox nor as an
// address outside the pool (which would also escape masquerading). UDP
// shows whether a datagram arrived at all, whatever would happen to replies.
func TestSpoofedSourceDropped(t *testing.T) {
	p := newTestPool(t, nil)
	a := acquire(t, p, "sbx-a")
	b := acquire(t, p, "sbx-b")
	ow := newOutsideWorld(t, p)
	var pc net.PacketConn
	must(t, inNetnsPath(ow.path, func() (err error) {
		pc, err = net.ListenPacket("udp4", hostPort(ow.addr, guestPort))
		return err
	}))
	t.Cleanup(func() { pc.Close() })

	foreign := netip.MustParseAddr("198.51.100.7")
	ns, err := netns.GetFromPath(a.NetnsPath)
	must(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	defer h.Close()
	eth, err := h.LinkByName(GuestIfName)
	must(t, err)
	for _, extra := range []netip.Addr{b.GuestAddr, foreign} {
		must(t, h.AddrAdd(eth, &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(extra, 32))}))
	}

	tests := []struct {
		name     string
		src      netip.Addr
		wantPeer string // "" = must not arrive
	}{
		{"own address, masqueraded", a.GuestAddr, ow.hostAddr.String()},
		{"another sandbox's address", b.GuestAddr, ""},
		{"an address outside the pool", foreign, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.name
			must(t, inNetnsPath(a.NetnsPath, func() error {
				c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.src, 0)),
					net.UDPAddrFromAddrPort(netip.AddrPortFrom(ow.addr, guestPort)))
				if err != nil {
					return err
				}
				defer c.Close()
				for range 3 {
					if _, err := c.Write([]byte(payload)); err != nil {
						return err
					}
				}
				return nil
			}))
			// A datagram that must arrive gets okTimeout (the first may wait on neighbour
			// resolution on a busy host) and ends the wait; one that must not gets
			// blockedTimeout to show up.
			timeout := okTimeout
			if tc.wantPeer == "" {
				timeout = blockedTimeout
			}
			peer := ""
			buf := make([]byte, 128)
			pc.SetReadDeadline(time.Now().Add(timeout))
			for peer == "" || tc.wantPeer == "" {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				if string(buf[:n]) == payload {
					peer = from.(*net.UDPAddr).IP.String()
				}
			}
			if peer != tc.wantPeer {
				t.Fatalf("datagram from %s arrived from %q, want %q", tc.src, peer, tc.wantPeer)
			}
		})
	}
}

func TestSlotObjects(t *testing.T) {
	p := newTestPool(t, nil)
	s := acquire(t, p, "sbx-objects")

	if s.Block != p.cfg.block(0) || s.HostAddr != s.Block.Addr().Next() || s.GuestAddr != s.HostAddr.Next() {
		t.Fatalf("addressing: block %s host %s guest %s", s.Block, s.HostAddr, s.GuestAddr)
	}
	host, err := netlink.LinkByName(s.HostIf)
	must(t, err)
	if host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is not up", s.HostIf)
	}
	assertAddr(t, nil, host, netip.PrefixFrom(s.HostAddr, 30))

	ns, err := netns.GetFromPath(s.NetnsPath)
	must(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	defer h.Close()
	eth, err := h.LinkByName(GuestIfName)
	must(t, err)
	assertAddr(t, h, eth, netip.PrefixFrom(s.GuestAddr, 30))
	if eth.Attrs().HardwareAddr.String() != s.GuestMAC.String() {
		t.Errorf("eth0 MAC %s, want %s", eth.Attrs().HardwareAddr, s.GuestMAC)
	}
	assertDefaultRoute(t, h, s.HostAddr)
	lo, err := h.LinkByName("lo")
	must(t, err)
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down in the slot netns")
	}

	names, err := p.table.slotIfNames()
	must(t, err)
	if !slices.Equal(names, []string{s.HostIf}) {
		t.Errorf("slot_ifs = %v, want [%s]", names, s.HostIf)
	}
}

func TestWithTAP(t *testing.T) {
	p := newTestPool(t, nil)
	s := acquire(t, p, "sbx-vm", WithTAP())
	if s.TAP != TAPName {
		t.Fatalf("Slot.TAP = %q", s.TAP)
	}
	ns, err := netns.GetFromPath(s.NetnsPath)
	must(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	defer h.Close()
	tap, err := h.LinkByName(TAPName)
	must(t, err)
	if _, ok := tap.(*netlink.Tuntap); !ok || tap.(*netlink.Tuntap).Mode != netlink.TUNTAP_MODE_TAP {
		t.Errorf("%s is %T, want a TAP", TAPName, tap)
	}
	if q := tap.Attrs().TxQLen; q != TAPTxQueueLen {
		t.Errorf("%s txqueuelen %d, want %d", TAPName, q, TAPTxQueueLen)
	}
	assertAddr(t, h, tap, netip.PrefixFrom(VMGatewayAddr, VMPrefixLen))
	var fwd []byte
	must(t, inThreadNetns(ns, func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}))
	if string(fwd) != "1\n" {
		t.Errorf("ip_forward in slot netns = %q, want 1", fwd)
	}
	rules := vmNATRules(t, ns)
	if rules != 2 {
		t.Errorf("VM NAT table has %d rules, want 2 (DNAT in, SNAT out)", rules)
	}
}

func TestRateLimitReadBack(t *testing.T) {
	p := newTestPool(t, nil)
	s := acquire(t, p, "sbx-rate")
	host, err := netlink.LinkByName(s.HostIf)
	must(t, err)
	ifb, err := netlink.LinkByName(p.cfg.ifbName(s.Index))
	must(t, err)

	// Everything entering the host from the sandbox goes to its IFB...
	qdiscs, err := netlink.QdiscList(host)
	must(t, err)
	if !slices.ContainsFunc(qdiscs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
		t.Fatalf("no ingress qdisc on %s: %v", s.HostIf, qdiscs)
	}
	filters, err := netlink.FilterList(host, ingressParent)
	must(t, err)
	redirected := false
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok {
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == ifb.Attrs().Index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
					redirected = true
				}
			}
		}
	}
	if !redirected {
		t.Fatalf("%s ingress is not redirected to %s: %v", s.HostIf, ifb.Attrs().Name, filters)
	}

	// ...where a TBF holds it to the rate and burst.
	qdiscs, err = netlink.QdiscList(ifb)
	must(t, err)
	var tbf *netlink.Tbf
	for _, q := range qdiscs {
		if q, ok := q.(*netlink.Tbf); ok {
			tbf = q
		}
	}
	if tbf == nil {
		t.Fatalf("no tbf on %s: %v", ifb.Attrs().Name, qdiscs)
	}
	if tbf.Rate != EgressRateBytesPerSec {
		t.Errorf("tbf rate %d B/s, want %d", tbf.Rate, EgressRateBytesPerSec)
	}
	// The kernel keeps the bucket as time at the rate; allow for the
	// rounding of that conversion.
	burst := int64(netlink.Xmitsize(tbf.Rate, tbf.Buffer))
	if d := burst - EgressBurstBytes; d < -EgressBurstBytes/1000 || d > EgressBurstBytes/1000 {
		t.Errorf("tbf burst %d B, want %d", burst, EgressBurstBytes)
	}
	if ifb.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s is down", ifb.Attrs().Name)
	}
}

func TestRestoreGuestAddr(t *testing.T) {
	p := newTestPool(t, nil)
	s := acquire(t, p, "sbx-gvisor")
	ns, err := netns.GetFromPath(s.NetnsPath)
	must(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	defer h.Close()
	eth, err := h.LinkByName(GuestIfName)
	must(t, err)

	// What gVisor leaves behind: no IPv4 address and so no routes.
	addrs, err := h.AddrList(eth, netlink.FAMILY_V4)
	must(t, err)
	for _, a := range addrs {
		must(t, h.AddrDel(eth, &a))
	}
	if _, err := dialFrom("", hostPort(s.GuestAddr, guestPort), blockedTimeout); err == nil {
		t.Fatal("guest reachable with its address stripped")
	}

	for range 2 { // idempotent
		if err := s.RestoreGuestAddr(context.Background()); err != nil {
			t.Fatalf("RestoreGuestAddr: %v", err)
		}
	}
	assertAddr(t, h, eth, netip.PrefixFrom(s.GuestAddr, 30))
	assertDefaultRoute(t, h, s.HostAddr)
	servePeerAddr(listenIn(t, s.NetnsPath, hostPort(s.GuestAddr, guestPort)))
	if _, err := dialFrom("", hostPort(s.GuestAddr, guestPort), okTimeout); err != nil {
		t.Fatalf("host to restored guest: %v", err)
	}
}

// TestReleaseLeavesNothing also checks that indices are reused.
func TestReleaseLeavesNothing(t *testing.T) {
	p := newTestPool(t, nil)
	for _, opts := range [][]AcquireOption{nil, {WithTAP()}} {
		s := acquire(t, p, "sbx-release", opts...)
		if s.Index != 0 {
			t.Errorf("index %d after release, want 0 reused", s.Index)
		}
		if err := p.Release(context.Background(), s); err != nil {
			t.Fatalf("Release: %v", err)
		}
		assertNoSlotObjects(t, p)
		if err := p.Release(context.Background(), s); err == nil {
			t.Error("second Release of the same slot succeeded")
		}
	}
	if p.InUse() != 0 {
		t.Errorf("InUse = %d after releases", p.InUse())
	}
}

// TestReclaimAfterCrash drops a Pool without releasing its slots, plus the
// remains of an Acquire that died half-way, and checks that a new Pool's
// Reclaim removes all of it.
func TestReclaimAfterCrash(t *testing.T) {
	crashed := newTestPool(t, nil)
	acquire(t, crashed, "sbx-1")
	acquire(t, crashed, "sbx-2", WithTAP())
	// Acquire died after creating the netns of slot 7...
	ns, err := createNamedNetns(context.Background(), crashed.cfg.netnsName(7))
	must(t, err)
	ns.Close()
	// ...and after creating the veth of slot 8, before moving on.
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: crashed.cfg.hostIfName(8)}, PeerName: crashed.cfg.Prefix + "p8"}))

	// A Pool with a prefix that merely starts with ours must keep its slot.
	other := newTestPool(t, func(c *Config) { c.Prefix = crashed.cfg.Prefix + "0" })
	otherSlot := acquire(t, other, "neighbour")

	p, err := New(crashed.cfg)
	must(t, err)
	for range 2 { // idempotent
		if err := p.Reclaim(context.Background()); err != nil {
			t.Fatalf("Reclaim: %v", err)
		}
		assertNoSlotObjects(t, p)
	}
	if _, err := os.Stat(otherSlot.NetnsPath); err != nil {
		t.Errorf("Reclaim removed another prefix's netns: %v", err)
	}
	if _, err := netlink.LinkByName(otherSlot.HostIf); err != nil {
		t.Errorf("Reclaim removed another prefix's veth: %v", err)
	}
	s := acquire(t, p, "sbx-after")
	if s.Index != 0 {
		t.Errorf("first index after reclaim %d, want 0", s.Index)
	}
}

func TestConcurrentAcquireRelease(t *testing.T) {
	p := newTestPool(t, nil)
	const n = 6
	slots := make([]*Slot, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			s, err := p.Acquire(context.Background(), "sbx")
			slots[i] = s
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, s := range slots {
		if seen[s.Index] {
			t.Fatalf("index %d handed out twice", s.Index)
		}
		seen[s.Index] = true
	}
	for _, s := range slots {
		wg.Go(func() {
			if err := p.Release(context.Background(), s); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	assertNoSlotObjects(t, p)
}

func TestAcquireHonoursContext(t *testing.T) {
	p := newTestPool(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Acquire(ctx, "sbx"); err == nil {
		t.Fatal("Acquire with a cancelled context succeeded")
	}
	assertNoSlotObjects(t, p)
	if p.InUse() != 0 {
		t.Errorf("InUse = %d after failed Acquire", p.InUse())
	}
}
