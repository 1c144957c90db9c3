package netslot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// needRoot skips tests that create kernel objects when not running as root:
// without CAP_NET_ADMIN and CAP_SYS_ADMIN none of them can be created.
func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces, veths and nftables tables")
	}
}

// newTestPool returns a reclaimed Pool with a random prefix and a /24 of
// its own, torn down when the test ends, pass or fail.
func newTestPool(tb testing.TB, mutate func(*Config)) *Pool {
	tb.Helper()
	needRoot(tb)
	cfg := Config{
		Prefix: fmt.Sprintf("nst%04x", rand.IntN(1<<16)),
		CIDR:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 251, byte(rand.IntN(256)), 0}), 24),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Teardown(context.Background()); err != nil {
			tb.Errorf("Teardown: %v", err)
		}
	})
	if err := p.Reclaim(context.Background()); err != nil {
		tb.Fatalf("Reclaim: %v", err)
	}
	return p
}

func acquire(tb testing.TB, p *Pool, id string, opts ...AcquireOption) *Slot {
	tb.Helper()
	s, err := p.Acquire(context.Background(), id, opts...)
	if err != nil {
		tb.Fatalf("Acquire(%s): %v", id, err)
	}
	return s
}

// inNetnsPath runs fn on a thread inside the namespace at path; path ""
// means the root namespace (fn runs on the calling goroutine).
func inNetnsPath(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inThreadNetns(ns, fn)
}

// listenIn opens a TCP listener inside the namespace at path. The socket
// keeps its namespace, so Accept may then run on any thread.
func listenIn(tb testing.TB, path, addr string) net.Listener {
	tb.Helper()
	var ln net.Listener
	err := inNetnsPath(path, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("listen on %s in %q: %v", addr, path, err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// servePeerAddr answers every connection with the peer address it saw.
func servePeerAddr(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// dialFrom connects from the namespace at path ("" = root) and returns the
// peer address the server reported.
func dialFrom(path, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := inNetnsPath(path, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// outsideWorld is a namespace standing in for the internet: reachable from
// the root namespace through its own veth, outside every sandbox rule.
type outsideWorld struct {
	path     string
	hostIf   string     // root-namespace end of its veth
	hostAddr netip.Addr // root-namespace end, the address masquerading must produce
	addr     netip.Addr // the "internet host"
}

func newOutsideWorld(tb testing.TB, p *Pool) *outsideWorld {
	tb.Helper()
	name := p.cfg.Prefix + "ow"
	hostIf := p.cfg.Prefix + "ow"
	ns, err := createNamedNetns(context.Background(), name)
	if err != nil {
		tb.Fatalf("outside netns: %v", err)
	}
	defer ns.Close()
	tb.Cleanup(func() {
		if l, err := netlink.LinkByName(hostIf); err == nil {
			netlink.LinkDel(l)
		}
		deleteNamedNetns(name)
	})
	ow := &outsideWorld{
		path:     netnsDir + "/" + name,
		hostIf:   hostIf,
		hostAddr: netip.MustParseAddr("203.0.113.1"),
		addr:     netip.MustParseAddr("203.0.113.2"),
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		tb.Fatalf("outside veth: %v", err)
	}
	host, _ := netlink.LinkByName(hostIf)
	must(tb, netlink.AddrAdd(host, &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(ow.hostAddr, 30))}))
	must(tb, netlink.LinkSetUp(host))
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	eth, _ := h.LinkByName("eth0")
	lo, _ := h.LinkByName("lo")
	must(tb, h.AddrAdd(eth, &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(ow.addr, 30))}))
	must(tb, h.LinkSetUp(eth))
	must(tb, h.LinkSetUp(lo))
	must(tb, h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: ow.hostAddr.AsSlice()}))
	return ow
}

// outsideHostNet holds more "internet hosts" (in TEST-NET-2; TEST-NET-1 is
// some test machines' own network), added to the outside world by addHosts
// and routed to it from the root namespace.
var outsideHostNet = netip.MustParsePrefix("198.51.100.64/29")

// addHosts gives the outside world the first n addresses of outsideHostNet
// (.1 up) and returns them.
func (ow *outsideWorld) addHosts(tb testing.TB, n int) []netip.Addr {
	tb.Helper()
	ns, err := netns.GetFromPath(ow.path)
	must(tb, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(tb, err)
	defer h.Close()
	lo, err := h.LinkByName("lo")
	must(tb, err)
	var hosts []netip.Addr
	for a := outsideHostNet.Addr().Next(); len(hosts) < n; a = a.Next() {
		must(tb, h.AddrAdd(lo, &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(a, 32))}))
		hosts = append(hosts, a)
	}
	// The route goes with the veth when the outside world is removed.
	link, err := netlink.LinkByName(ow.hostIf)
	must(tb, err)
	must(tb, netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixIPNet(outsideHostNet), Gw: ow.addr.AsSlice()}))
	return hosts
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func netDialer(src netip.Addr, timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
}

func assertAddr(tb testing.TB, h *netlink.Handle, link netlink.Link, want netip.Prefix) {
	tb.Helper()
	if h == nil {
		h = &netlink.Handle{}
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	must(tb, err)
	for _, a := range addrs {
		if p, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			if netip.PrefixFrom(p.Unmap(), ones) == want {
				return
			}
		}
	}
	tb.Errorf("%s has addresses %v, want %s", link.Attrs().Name, addrs, want)
}

func assertDefaultRoute(tb testing.TB, h *netlink.Handle, gw netip.Addr) {
	tb.Helper()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	must(tb, err)
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(gw.AsSlice()) {
			return
		}
	}
	tb.Errorf("no default route via %s in %v", gw, routes)
}

// assertNoSlotObjects checks that nothing of p's prefix is left but the
// (empty) nftables table.
func assertNoSlotObjects(tb testing.TB, p *Pool) {
	tb.Helper()
	names, err := listNamedNetns()
	must(tb, err)
	for _, n := range names {
		if _, ok := parseIndex(n, p.cfg.Prefix+"-"); ok {
			tb.Errorf("netns %s left behind", n)
		}
	}
	links, err := listLinks(context.Background())
	must(tb, err)
	for _, l := range links {
		for _, head := range []string{p.cfg.Prefix + "-h", p.cfg.Prefix + "-i"} {
			if _, ok := parseIndex(l.Attrs().Name, head); ok {
				tb.Errorf("interface %s left behind", l.Attrs().Name)
			}
		}
		if strings.HasPrefix(l.Attrs().Name, p.cfg.Prefix+"p") {
			tb.Errorf("interface %s left behind", l.Attrs().Name)
		}
	}
	elems, err := p.table.slotIfNames()
	must(tb, err)
	if len(elems) != 0 {
		tb.Errorf("slot_ifs still holds %v", elems)
	}
	if objs := egressObjects(tb, p); len(objs) != 0 {
		tb.Errorf("egress policies left behind: %v", objs)
	}
}

// egressObjects reads p's table back and describes every per-slot egress
// object in it, sorted: "chain egress_0 (2 rules)", "chain inspect_0 (2
// rules)", "set egress_deny_0 (1 elements)", "element <hostIf>" (of
// slot_egress), "inspect element <hostIf>" (of slot_inspect, which only a
// pool with an inspect port has). A missing table holds none.
func egressObjects(tb testing.TB, p *Pool) []string {
	tb.Helper()
	c, err := nftables.New()
	must(tb, err)
	egressMap, err := c.GetSetByName(p.table.table, mapSlotEgress)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	must(tb, err)
	var objs []string
	elems, err := c.GetSetElements(egressMap)
	must(tb, err)
	for _, e := range elems {
		objs = append(objs, "element "+cString(e.Key))
	}
	if inspectMap, err := c.GetSetByName(p.table.table, mapSlotInspect); err == nil {
		elems, err := c.GetSetElements(inspectMap)
		must(tb, err)
		for _, e := range elems {
			objs = append(objs, "inspect element "+cString(e.Key))
		}
	} else if !errors.Is(err, unix.ENOENT) {
		tb.Fatal(err)
	} else if p.cfg.InspectPort != 0 {
		tb.Errorf("pool with inspect port %d has no map %s", p.cfg.InspectPort, mapSlotInspect)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	must(tb, err)
	for _, ch := range chains {
		if ch.Table.Name == p.cfg.Prefix && (strings.HasPrefix(ch.Name, "egress_") && ch.Name != chainEgressReject || strings.HasPrefix(ch.Name, "inspect_")) {
			rules, err := c.GetRules(p.table.table, ch)
			must(tb, err)
			objs = append(objs, fmt.Sprintf("chain %s (%d rules)", ch.Name, len(rules)))
		}
	}
	sets, err := c.GetSets(p.table.table)
	must(tb, err)
	for _, set := range sets {
		if strings.HasPrefix(set.Name, "egress_") {
			elems, err := c.GetSetElements(set)
			must(tb, err)
			objs = append(objs, fmt.Sprintf("set %s (%d elements)", set.Name, len(elems)))
		}
	}
	slices.Sort(objs)
	return objs
}

// slotEgressObjects is what egressObjects lists for slot s with a policy
// whose sets hold allow and deny elements.
func slotEgressObjects(s *Slot, allow, deny int) []string {
	objs := []string{
		fmt.Sprintf("chain egress_%d (2 rules)", s.Index),
		"element " + s.HostIf,
		fmt.Sprintf("set egress_allow_%d (%d elements)", s.Index, allow),
		fmt.Sprintf("set egress_deny_%d (%d elements)", s.Index, deny),
	}
	slices.Sort(objs)
	return objs
}

// slotInspectObjects is slotEgressObjects for a policy with Inspect.
func slotInspectObjects(s *Slot, allow, deny int) []string {
	objs := append(slotEgressObjects(s, allow, deny),
		fmt.Sprintf("chain inspect_%d (2 rules)", s.Index),
		"inspect element "+s.HostIf,
	)
	slices.Sort(objs)
	return objs
}

// vmNATRules counts the rules of the VM NAT table in a slot namespace.
func vmNATRules(tb testing.TB, ns netns.NsHandle) int {
	tb.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must(tb, err)
	table := &nftables.Table{Name: vmTableName, Family: nftables.TableFamilyIPv4}
	n := 0
	for _, chain := range []string{"prerouting", "postrouting"} {
		rules, err := c.GetRules(table, &nftables.Chain{Name: chain, Table: table})
		must(tb, err)
		n += len(rules)
	}
	return n
}
