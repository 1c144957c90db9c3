package netslot

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the sets in the host table.
const (
	setSlotIfs   = "slot_ifs"
	setHostPorts = "host_ports"
)

// hostTable is the pool's one nftables table in the root namespace (see
// the package doc for its layout). Slots only add and remove elements of
// slot_ifs.
type hostTable struct {
	cfg   Config
	table *nftables.Table
}

func newHostTable(cfg Config) *hostTable {
	return &hostTable{cfg: cfg, table: &nftables.Table{Name: cfg.Prefix, Family: nftables.TableFamilyINet}}
}

func (t *hostTable) slotIfsSet() *nftables.Set {
	// Host byte order is how nft itself declares ifname keys; it makes
	// `nft list` print the names.
	return &nftables.Set{Table: t.table, Name: setSlotIfs, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// install replaces the table with a fresh one in a single transaction, so
// there is never a moment with half the rules, and leftovers of a previous
// run (elements of vanished slots) are gone.
func (t *hostTable) install() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	// add+delete+add: deletes the table if it exists without failing if not.
	c.AddTable(t.table)
	c.DelTable(t.table)
	c.AddTable(t.table)

	slotIfs := t.slotIfsSet()
	if err := c.AddSet(slotIfs, nil); err != nil {
		return fmt.Errorf("nftables set %s: %w", setSlotIfs, err)
	}
	hostPorts := &nftables.Set{Table: t.table, Name: setHostPorts, KeyType: nftables.TypeInetService}
	var ports []nftables.SetElement
	for _, p := range uniq(t.cfg.AllowHostPorts) {
		ports = append(ports, nftables.SetElement{Key: portKey(p)})
	}
	if err := c.AddSet(hostPorts, ports); err != nil {
		return fmt.Errorf("nftables set %s: %w", setHostPorts, err)
	}

	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t.table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	add := func(ch *nftables.Chain, exprs []expr.Any) {
		c.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: exprs})
	}

	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	add(pre, rule(iifIn(slotIfs), srcNotRoutedViaIif(), []expr.Any{verdict(expr.VerdictDrop)}))

	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	add(in, rule(iifIn(slotIfs), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		add(in, rule(iifIn(slotIfs), l4proto(proto), dportIn(hostPorts), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	add(in, rule(iifIn(slotIfs), []expr.Any{verdict(expr.VerdictDrop)}))

	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	add(fwd, rule(oifIn(slotIfs), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	add(fwd, rule(oifIn(slotIfs), []expr.Any{verdict(expr.VerdictDrop)}))
	add(fwd, rule(iifIn(slotIfs), notIPv4(), []expr.Any{verdict(expr.VerdictDrop)}))
	for _, n := range t.cfg.AllowNets {
		add(fwd, rule(iifIn(slotIfs), isIPv4(), ipAddrIn(offDaddr, n), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	for _, n := range append([]netip.Prefix{t.cfg.CIDR}, t.cfg.DenyNets...) {
		add(fwd, rule(iifIn(slotIfs), isIPv4(), ipAddrIn(offDaddr, n), []expr.Any{verdict(expr.VerdictDrop)}))
	}
	add(fwd, rule(iifIn(slotIfs), []expr.Any{verdict(expr.VerdictAccept)}))

	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	add(post, rule(isIPv4(), ipAddrIn(offSaddr, t.cfg.CIDR), metaIn(expr.MetaKeyOIFNAME, slotIfs, true), []expr.Any{&expr.Masq{}}))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", t.cfg.Prefix, err)
	}
	return nil
}

// addSlot marks ifname as a sandbox interface.
func (t *hostTable) addSlot(ifname string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	if err := c.SetAddElements(t.slotIfsSet(), []nftables.SetElement{{Key: ifnameKey(ifname)}}); err != nil {
		return fmt.Errorf("add %s to set %s: %w", ifname, setSlotIfs, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add %s to set %s: %w", ifname, setSlotIfs, err)
	}
	return nil
}

// delSlot removes ifname from the sandbox interfaces; absent is fine.
func (t *hostTable) delSlot(ifname string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	if err := c.SetDeleteElements(t.slotIfsSet(), []nftables.SetElement{{Key: ifnameKey(ifname)}}); err != nil {
		return fmt.Errorf("remove %s from set %s: %w", ifname, setSlotIfs, err)
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from set %s: %w", ifname, setSlotIfs, err)
	}
	return nil
}

// slotIfNames lists the elements of slot_ifs; a missing table lists none.
func (t *hostTable) slotIfNames() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	set, err := c.GetSetByName(t.table, setSlotIfs)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up set %s: %w", setSlotIfs, err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("list set %s: %w", setSlotIfs, err)
	}
	names := make([]string, 0, len(elems))
	for _, e := range elems {
		names = append(names, cString(e.Key))
	}
	return names, nil
}

// remove deletes the table if it exists.
func (t *hostTable) remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	c.AddTable(t.table)
	c.DelTable(t.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", t.cfg.Prefix, err)
	}
	return nil
}

func cString(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func uniq[T comparable](in []T) []T {
	var out []T
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
