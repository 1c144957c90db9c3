package netslot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// acquireOptions are set by AcquireOption values.
type acquireOptions struct {
	tap       bool
	egress    Egress
	egressErr error // an invalid WithEgress, returned by Acquire
}

// AcquireOption changes what Acquire builds.
type AcquireOption func(*acquireOptions)

// WithTAP adds tap0 for a microVM to the slot, with the in-namespace NAT
// described in the package doc.
func WithTAP() AcquireOption { return func(o *acquireOptions) { o.tap = true } }

// build creates every kernel object of slot s. On error the caller tears
// down whatever exists; build does not clean up after itself.
func (p *Pool) build(ctx context.Context, s *Slot, o acquireOptions) error {
	ns, err := createNamedNetns(ctx, s.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", s.Netns, err)
	}
	defer nh.Close()

	if err := ctx.Err(); err != nil {
		return err
	}
	// The peer is created directly inside the namespace under its final
	// name, so a crash never leaves a stray eth0 in the root namespace.
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: s.HostIf},
		PeerName:         GuestIfName,
		PeerHardwareAddr: s.GuestMAC,
		PeerNamespace:    netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", s.HostIf, err)
	}
	// Mark the interface as a sandbox, and put its egress policy in force,
	// before it can carry traffic.
	if err := p.table.addSlot(s.Index, s.HostIf, o.egress); err != nil {
		return err
	}
	s.egress = o.egress
	if err := p.configureHost(ctx, s); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.configureGuest(nh); err != nil {
		return fmt.Errorf("configure netns %s: %w", s.Netns, err)
	}
	if o.tap {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := addTAP(ns, nh); err != nil {
			return fmt.Errorf("netns %s: %w", s.Netns, err)
		}
		if err := installVMNAT(ns, s.GuestAddr); err != nil {
			return fmt.Errorf("netns %s: %w", s.Netns, err)
		}
		s.TAP = TAPName
	}
	return nil
}

// configureHost addresses the host end, applies the egress limit and sets
// it up.
func (p *Pool) configureHost(ctx context.Context, s *Slot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(s.HostIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", s.HostIf, err)
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(s.HostAddr, s.Block.Bits()))}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("set %s address %s: %w", s.HostIf, addr.IPNet, err)
	}
	if err := applyEgressLimit(link, p.cfg.ifbName(s.Index)); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", s.HostIf, err)
	}
	return nil
}

// addTAP creates a persistent tap0 inside the namespace. TUNSETIFF creates
// the device in the namespace of the calling thread, hence inThreadNetns;
// the address and link state go through the namespace's netlink handle.
func addTAP(ns netns.NsHandle, nh *netlink.Handle) error {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: TAPName, TxQLen: TAPTxQueueLen},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}
	err := inThreadNetns(ns, func() error { return netlink.LinkAdd(tap) })
	if err != nil {
		return fmt.Errorf("create %s: %w", TAPName, err)
	}
	link, err := nh.LinkByName(TAPName)
	if err != nil {
		return fmt.Errorf("find %s: %w", TAPName, err)
	}
	if link.Attrs().TxQLen != TAPTxQueueLen {
		if err := nh.LinkSetTxQLen(link, TAPTxQueueLen); err != nil {
			return fmt.Errorf("set %s txqueuelen: %w", TAPName, err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(VMGatewayAddr, VMPrefixLen))}
	if err := nh.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("set %s address: %w", TAPName, err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", TAPName, err)
	}
	// The namespace routes between eth0 and tap0.
	return inThreadNetns(ns, func() error { return setSysctl("net.ipv4.ip_forward", "1") })
}

// teardown removes every object of slot index i: its nftables elements and
// egress policy, the host veth (which takes its peer with it), the IFB and
// the namespace (and with it the TAP and the VM table). Missing objects are
// not errors.
func (p *Pool) teardown(i int) error {
	var errs []error
	hostIf := p.cfg.hostIfName(i)
	if err := p.table.delSlot(i, hostIf); err != nil {
		errs = append(errs, err)
	}
	if link, err := netlink.LinkByName(hostIf); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", hostIf, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("find veth %s: %w", hostIf, err))
	}
	ifb := p.cfg.ifbName(i)
	if link, err := netlink.LinkByName(ifb); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete ifb %s: %w", ifb, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("find ifb %s: %w", ifb, err))
	}
	if err := deleteNamedNetns(p.cfg.netnsName(i)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// clearLeftovers tears index i down only if one of its devices or its
// namespace exists, sparing Acquire an nftables transaction otherwise. A
// stale set element or egress policy alone is harmless: addSlot overwrites
// both.
func (p *Pool) clearLeftovers(i int) error {
	_, err := os.Stat(filepath.Join(netnsDir, p.cfg.netnsName(i)))
	exists := err == nil
	for _, name := range []string{p.cfg.hostIfName(i), p.cfg.ifbName(i)} {
		if _, err := netlink.LinkByName(name); err == nil {
			exists = true
		}
	}
	if !exists {
		return nil
	}
	p.log.Warn("clearing leftovers of slot", "slot", i)
	return p.teardown(i)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
