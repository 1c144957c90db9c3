package netslot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Fixed names and addresses inside every slot namespace.
const (
	// GuestIfName is the veth end inside the namespace.
	GuestIfName = "eth0"
	// TAPName is the microVM TAP created by WithTAP.
	TAPName = "tap0"
	// TAPTxQueueLen is the TAP's transmit queue length.
	TAPTxQueueLen = 5000
	// VMPrefixLen is the length of the link between tap0 and the VM.
	VMPrefixLen = 30
)

var (
	// VMGatewayAddr is tap0's address, the VM's default gateway.
	VMGatewayAddr = netip.MustParseAddr("169.254.0.1")
	// VMGuestAddr is the address every VM is configured with; the slot
	// namespace NATs it to and from Slot.GuestAddr.
	VMGuestAddr = netip.MustParseAddr("169.254.0.2")
)

// Slot is one sandbox's network: a namespace, the veth pair and, for
// microVMs, a TAP. Fields are read-only.
type Slot struct {
	SandboxID string
	Index     int
	// Netns is the namespace name; NetnsPath the path to hand to runsc
	// (OCI linux.namespaces network path), nsenter --net= or a VM jailer.
	Netns     string
	NetnsPath string
	// HostIf is the host end of the veth in the root namespace.
	HostIf string
	// HostAddr is HostIf's address and the sandbox's gateway (.1 of Block).
	HostAddr netip.Addr
	// GuestAddr is the sandbox's address as the host sees it (.2 of Block):
	// on eth0 for containers, NATed to VMGuestAddr for microVMs.
	GuestAddr netip.Addr
	// GuestMAC is eth0's MAC address, stable per slot index.
	GuestMAC net.HardwareAddr
	Block    netip.Prefix
	// TAP is TAPName when the slot was acquired WithTAP, else "".
	TAP string

	// mu guards egress and keeps a policy change and the slot's teardown
	// from overlapping.
	mu     sync.Mutex
	egress Egress
}

// guestMAC derives a locally administered unicast MAC from the address, so
// a sandbox restored into the same slot keeps its MAC.
func guestMAC(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x48, b[0], b[1], b[2], b[3]}
}

func newSlot(cfg Config, i int, sandboxID string) *Slot {
	block := cfg.block(i)
	host := block.Addr().Next()
	guest := host.Next()
	return &Slot{
		SandboxID: sandboxID,
		Index:     i,
		Netns:     cfg.netnsName(i),
		NetnsPath: filepath.Join(netnsDir, cfg.netnsName(i)),
		HostIf:    cfg.hostIfName(i),
		HostAddr:  host,
		GuestAddr: guest,
		GuestMAC:  guestMAC(guest),
		Block:     block,
	}
}

// RestoreGuestAddr puts eth0's address, link state and default route back
// in the slot namespace. gVisor's netstack removes them from the interface
// it takes over, so the gVisor driver calls this before every runsc restore
// (and may call it any time: it is idempotent).
func (s *Slot) RestoreGuestAddr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ns, err := netns.GetFromPath(s.NetnsPath)
	if err != nil {
		return fmt.Errorf("slot %d: open netns %s: %w", s.Index, s.NetnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("slot %d: netlink handle in netns: %w", s.Index, err)
	}
	defer h.Close()
	if err := s.configureGuest(h); err != nil {
		return fmt.Errorf("slot %d: restore guest address: %w", s.Index, err)
	}
	return nil
}

// configureGuest sets lo and eth0 up, eth0's address and the default route
// via the host end. Replace semantics make it safe to repeat.
func (s *Slot) configureGuest(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	eth, err := h.LinkByName(GuestIfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", GuestIfName, err)
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(s.GuestAddr, s.Block.Bits()))}
	if err := h.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("set %s address %s: %w", GuestIfName, addr.IPNet, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set %s up: %w", GuestIfName, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: s.HostAddr.AsSlice(), Dst: nil}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("set default route via %s: %w", s.HostAddr, err)
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
