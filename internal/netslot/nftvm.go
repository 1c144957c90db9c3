package netslot

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vmTableName is the nftables table inside a slot namespace with a TAP. It
// dies with the namespace, so it needs no reclaim of its own.
const vmTableName = "hearthvm"

// installVMNAT maps the slot address to the VM's fixed address inside the
// slot namespace: inbound to slotAddr is DNATed to VMGuestAddr, and the VM's
// traffic leaving through eth0 is SNATed to slotAddr, so the host sees the
// same single address for a VM as for a container.
func installVMNAT(ns netns.NsHandle, slotAddr netip.Addr) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables connection in slot netns: %w", err)
	}
	table := c.AddTable(&nftables.Table{Name: vmTableName, Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})

	natTo := func(typ expr.NATType, a netip.Addr) []expr.Any {
		b := a.As4()
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: b[:]},
			&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1},
		}
	}
	c.AddRule(&nftables.Rule{Table: table, Chain: pre, Exprs: rule(
		ifnameIs(expr.MetaKeyIIFNAME, GuestIfName), ipAddrIs(offDaddr, slotAddr), natTo(expr.NATTypeDestNAT, VMGuestAddr))})
	c.AddRule(&nftables.Rule{Table: table, Chain: post, Exprs: rule(
		ifnameIs(expr.MetaKeyOIFNAME, GuestIfName), ipAddrIs(offSaddr, VMGuestAddr), natTo(expr.NATTypeSourceNAT, slotAddr))})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install VM NAT in slot netns: %w", err)
	}
	return nil
}
