package runtimetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Slot is a test network slot: a named netns holding the guest end of a veth pair whose host
// end stays in the root netns. Host and guest get the two usable addresses of a /30.
type Slot struct {
	Name    string // netns name; the netns is at NetNSPath
	HostIf  string
	HostIP  netip.Addr
	GuestIP netip.Addr
	prefix  int
}

// NetNSPath is the netns path to put in an OCI spec.
func (s *Slot) NetNSPath() string { return "/run/netns/" + s.Name }

var slotSeq atomic.Int32

// NewSlot creates a slot with addresses from 10.251.<n>.0/30, n unique in this process
// (offset by the pid so concurrent test binaries do not collide).
func NewSlot() (*Slot, error) {
	n := int(slotSeq.Add(1))
	third := (os.Getpid()*7 + n) % 250
	s := &Slot{
		Name:    fmt.Sprintf("hth-%d-%d", os.Getpid(), n),
		HostIf:  fmt.Sprintf("hth%dv%d", os.Getpid()%10000, n),
		HostIP:  netip.AddrFrom4([4]byte{10, 251, byte(third), 1}),
		GuestIP: netip.AddrFrom4([4]byte{10, 251, byte(third), 2}),
		prefix:  30,
	}
	if err := s.create(); err != nil {
		s.Close()
		return nil, fmt.Errorf("slot %s: %w", s.Name, err)
	}
	return s, nil
}

func (s *Slot) create() error {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(s.Name) // switches this thread into the new netns
	if serr := netns.Set(orig); serr != nil {
		return fmt.Errorf("back to the original netns: %w", serr)
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.HostIf},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	host, err := netlink.LinkByName(s.HostIf)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(host, addr(s.HostIP, s.prefix)); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	return s.ReAdd()
}

// ReAdd (re)configures the guest end inside the netns: link up, the guest address and a
// default route via the host. gVisor's netstack strips the address and routes from the
// interface it takes over, so this runs before every restore; it is idempotent.
func (s *Slot) ReAdd() error {
	ns, err := netns.GetFromName(s.Name)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrAdd(eth, addr(s.GuestIP, s.prefix)); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("guest address: %w", err)
	}
	gw := net.IP(s.HostIP.AsSlice())
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// Close removes the veth pair and the netns. Safe on a partly created slot.
func (s *Slot) Close() error {
	var errs []error
	if l, err := netlink.LinkByName(s.HostIf); err == nil {
		errs = append(errs, netlink.LinkDel(l))
	}
	if err := netns.DeleteNamed(s.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func addr(ip netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(bits, 32)}}
}
