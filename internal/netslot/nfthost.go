package netslot

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the sets, maps and shared chains in the host table.
const (
	setSlotIfs        = "slot_ifs"
	setHostPorts      = "host_ports"
	mapSlotEgress     = "slot_egress"
	chainEgressReject = "egress_reject"
	// Only in a pool with Config.InspectPort.
	mapSlotInspect   = "slot_inspect"
	setInspectPorts  = "inspect_ports"
	chainInspectBase = "prerouting_nat"
)

// inspectPorts are the destination ports whose denied TCP connections an
// Inspect policy redirects to the inspector: HTTP (Host header) and HTTPS
// (TLS SNI).
var inspectPorts = []uint16{80, 443}

// Set IDs let rules refer to sets created in the same transaction, and
// need only be unique within it. They are fixed here because AddSet would
// otherwise take one from a package-global counter it increments without
// a lock, a data race between concurrent Acquires.
const (
	idSlotIfs uint32 = iota + 1
	idHostPorts
	idSlotEgress
	idEgressAllow
	idEgressDeny
	idSlotInspect
	idInspectPorts
)

// egressChainName names the chain holding slot i's own egress policy.
func egressChainName(i int) string { return "egress_" + strconv.Itoa(i) }

// inspectChainName names the NAT chain redirecting slot i's denied HTTP
// and HTTPS connections to the inspector.
func inspectChainName(i int) string { return "inspect_" + strconv.Itoa(i) }

// hostTable is the pool's one nftables table in the root namespace (see
// the package doc for its layout). Slots only add and remove elements of
// slot_ifs, slot_egress and slot_inspect, and their own egress chains and
// sets.
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
	return &nftables.Set{Table: t.table, ID: idSlotIfs, Name: setSlotIfs, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// slotEgressMap maps a slot's host veth to a jump to its egress chain.
func (t *hostTable) slotEgressMap() *nftables.Set {
	return &nftables.Set{Table: t.table, ID: idSlotEgress, Name: mapSlotEgress, IsMap: true, KeyType: nftables.TypeIFName,
		KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
}

// slotInspectMap maps a slot's host veth to a jump to its inspect chain.
func (t *hostTable) slotInspectMap() *nftables.Set {
	return &nftables.Set{Table: t.table, ID: idSlotInspect, Name: mapSlotInspect, IsMap: true, KeyType: nftables.TypeIFName,
		KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
}

func (t *hostTable) inspectPortsSet() *nftables.Set {
	return &nftables.Set{Table: t.table, ID: idInspectPorts, Name: setInspectPorts, KeyType: nftables.TypeInetService}
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
	hostPorts := &nftables.Set{Table: t.table, ID: idHostPorts, Name: setHostPorts, KeyType: nftables.TypeInetService}
	var ports []nftables.SetElement
	for _, p := range uniq(t.cfg.AllowHostPorts) {
		ports = append(ports, nftables.SetElement{Key: portKey(p)})
	}
	if err := c.AddSet(hostPorts, ports); err != nil {
		return fmt.Errorf("nftables set %s: %w", setHostPorts, err)
	}

	slotEgress := t.slotEgressMap()
	if err := c.AddSet(slotEgress, nil); err != nil {
		return fmt.Errorf("nftables map %s: %w", mapSlotEgress, err)
	}

	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t.table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	add := func(ch *nftables.Chain, exprs []expr.Any) {
		c.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: exprs})
	}

	// Refuse rather than drop, so that a client in the sandbox fails at once
	// instead of waiting for a timeout. The reset needs a TCP packet to
	// answer; everything else gets an ICMP error.
	reject := c.AddChain(&nftables.Chain{Name: chainEgressReject, Table: t.table})
	add(reject, rule(l4proto(unix.IPPROTO_TCP), []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}))
	// Port unreachable, not admin-prohibited: gVisor's netstack reports only port
	// unreachable to UDP sockets, and without it a resolver in a denied sandbox
	// waits out every timeout (a minute per lookup) instead of failing at once.
	add(reject, []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}})

	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	add(pre, rule(iifIn(slotIfs), srcNotRoutedViaIif(), []expr.Any{verdict(expr.VerdictDrop)}))

	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	add(in, rule(iifIn(slotIfs), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		add(in, rule(iifIn(slotIfs), l4proto(proto), dportIn(hostPorts), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	if t.cfg.InspectPort != 0 {
		// Connections redirected to the inspector (prerouting_nat below),
		// and only those: conntrack marks them destination-NATed. A sandbox
		// connecting to the port itself is dropped with everything else.
		add(in, rule(iifIn(slotIfs), l4proto(unix.IPPROTO_TCP), dportIs(t.cfg.InspectPort), ctDNAT(), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	add(in, rule(iifIn(slotIfs), []expr.Any{verdict(expr.VerdictDrop)}))
	if t.cfg.InspectPort != 0 {
		// The inspector listens on every host address; it serves sandboxes only, so
		// nothing else (the host's own networks included) may reach its port.
		add(in, rule(metaIn(expr.MetaKeyIIFNAME, slotIfs, true), l4proto(unix.IPPROTO_TCP), dportIs(t.cfg.InspectPort), []expr.Any{verdict(expr.VerdictDrop)}))
	}

	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	add(fwd, rule(oifIn(slotIfs), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	add(fwd, rule(oifIn(slotIfs), []expr.Any{verdict(expr.VerdictDrop)}))
	add(fwd, rule(iifIn(slotIfs), notIPv4(), []expr.Any{verdict(expr.VerdictDrop)}))
	// The sandbox's own policy comes before the pool's nets, so that its
	// deny wins over AllowNets, and returns to them for what it allows, so
	// that DenyNets still apply.
	add(fwd, iifVmap(slotEgress))
	for _, n := range t.cfg.AllowNets {
		add(fwd, rule(iifIn(slotIfs), isIPv4(), ipAddrIn(offDaddr, n), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	for _, n := range append([]netip.Prefix{t.cfg.CIDR}, t.cfg.DenyNets...) {
		add(fwd, rule(iifIn(slotIfs), isIPv4(), ipAddrIn(offDaddr, n), []expr.Any{verdict(expr.VerdictDrop)}))
	}
	add(fwd, rule(iifIn(slotIfs), []expr.Any{verdict(expr.VerdictAccept)}))

	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	add(post, rule(isIPv4(), ipAddrIn(offSaddr, t.cfg.CIDR), metaIn(expr.MetaKeyOIFNAME, slotIfs, true), []expr.Any{&expr.Masq{}}))

	if t.cfg.InspectPort != 0 {
		// NAT chains see the first packet of a connection only, so a
		// redirect lasts as long as the connection, whatever policy
		// changes come after it.
		var ports []nftables.SetElement
		for _, p := range inspectPorts {
			ports = append(ports, nftables.SetElement{Key: portKey(p)})
		}
		if err := c.AddSet(t.inspectPortsSet(), ports); err != nil {
			return fmt.Errorf("nftables set %s: %w", setInspectPorts, err)
		}
		slotInspect := t.slotInspectMap()
		if err := c.AddSet(slotInspect, nil); err != nil {
			return fmt.Errorf("nftables map %s: %w", mapSlotInspect, err)
		}
		dnat := chain(chainInspectBase, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
		add(dnat, iifVmap(slotInspect))
	}

	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", t.cfg.Prefix, err)
	}
	return nil
}

// addSlot marks ifname (the host veth of slot i) as a sandbox interface
// and installs the slot's egress policy, in one transaction. It also
// removes whatever policy a previous holder of the index may have left.
func (t *hostTable) addSlot(i int, ifname string, e Egress) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	if err := c.SetAddElements(t.slotIfsSet(), []nftables.SetElement{{Key: ifnameKey(ifname)}}); err != nil {
		return fmt.Errorf("add %s to set %s: %w", ifname, setSlotIfs, err)
	}
	if err := t.queueEgress(c, i, ifname, e); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add %s to set %s: %w", ifname, setSlotIfs, err)
	}
	return nil
}

// setEgress replaces the egress policy of slot i in one transaction, so
// that no packet ever meets half a policy.
func (t *hostTable) setEgress(i int, ifname string, e Egress) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	if err := t.queueEgress(c, i, ifname, e); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("set egress policy of %s: %w", ifname, err)
	}
	return nil
}

// delSlot removes ifname from the sandbox interfaces and slot i's egress
// policy, in one transaction; absent objects are fine.
func (t *hostTable) delSlot(i int, ifname string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	// Added before it is deleted so that an absent element cannot fail the
	// transaction and with it the removal of the egress policy.
	elem := []nftables.SetElement{{Key: ifnameKey(ifname)}}
	if err := c.SetAddElements(t.slotIfsSet(), elem); err != nil {
		return fmt.Errorf("remove %s from set %s: %w", ifname, setSlotIfs, err)
	}
	if err := c.SetDeleteElements(t.slotIfsSet(), elem); err != nil {
		return fmt.Errorf("remove %s from set %s: %w", ifname, setSlotIfs, err)
	}
	if err := t.queueEgress(c, i, ifname, Egress{}); err != nil {
		return err
	}
	// ENOENT: the table itself is gone (or predates slot_egress; Reclaim
	// replaces it).
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from set %s: %w", ifname, setSlotIfs, err)
	}
	return nil
}

// egressSets are slot i's interval sets of allowed and denied destinations.
func (t *hostTable) egressSets(i int) (allow, deny *nftables.Set) {
	set := func(id uint32, list string) *nftables.Set {
		return &nftables.Set{Table: t.table, ID: id, Name: "egress_" + list + "_" + strconv.Itoa(i), KeyType: nftables.TypeIPAddr, Interval: true}
	}
	return set(idEgressAllow, "allow"), set(idEgressDeny, "deny")
}

// queueEgress adds to c the messages that make slot i's egress policy e,
// whatever the policy was before. The slot's chains, sets and map elements
// are added first, which is no error if they exist (no NLM_F_EXCL; an
// element's verdict is always the same for an index), then emptied and
// refilled or, for a policy without Deny entries, which restricts nothing,
// deleted again; likewise the inspect chain and its slot_inspect element,
// in a pool with an inspector, for a policy without Inspect.
//
// The prefixes go into interval sets, not one rule each: the policy stays
// two rules, and the transaction a few messages, however long the lists.
// (nftables acknowledges every message; a rule per prefix overflows the
// socket's receive buffer near the size limit.)
func (t *hostTable) queueEgress(c *nftables.Conn, i int, ifname string, e Egress) error {
	if e.Inspect && t.cfg.InspectPort == 0 {
		return fmt.Errorf("egress policy of %s: inspect without an inspect port", ifname)
	}
	chain := c.AddChain(&nftables.Chain{Name: egressChainName(i), Table: t.table})
	c.FlushChain(chain)
	var inspect *nftables.Chain
	if t.cfg.InspectPort != 0 {
		inspect = c.AddChain(&nftables.Chain{Name: inspectChainName(i), Table: t.table})
		c.FlushChain(inspect)
	}
	allow, deny := t.egressSets(i)
	for _, set := range []*nftables.Set{allow, deny} {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("egress policy of %s: set %s: %w", ifname, set.Name, err)
		}
		c.FlushSet(set)
	}
	elem := []nftables.SetElement{{Key: ifnameKey(ifname), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain.Name}}}
	if err := c.SetAddElements(t.slotEgressMap(), elem); err != nil {
		return fmt.Errorf("egress policy of %s: %w", ifname, err)
	}
	// dropInspect deletes the inspect chain and its element again.
	dropInspect := func() error { return nil }
	if inspect != nil {
		ielem := []nftables.SetElement{{Key: ifnameKey(ifname), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: inspect.Name}}}
		if err := c.SetAddElements(t.slotInspectMap(), ielem); err != nil {
			return fmt.Errorf("egress policy of %s: %w", ifname, err)
		}
		dropInspect = func() error {
			if err := c.SetDeleteElements(t.slotInspectMap(), ielem); err != nil {
				return fmt.Errorf("egress policy of %s: %w", ifname, err)
			}
			c.DelChain(inspect)
			return nil
		}
	}
	if len(e.Deny) == 0 {
		if err := c.SetDeleteElements(t.slotEgressMap(), elem); err != nil {
			return fmt.Errorf("egress policy of %s: %w", ifname, err)
		}
		if err := dropInspect(); err != nil {
			return err
		}
		// The chains' rules, flushed above, no longer hold the sets.
		c.DelChain(chain)
		c.DelSet(allow)
		c.DelSet(deny)
		return nil
	}
	for _, l := range []struct {
		set *nftables.Set
		ps  []netip.Prefix
	}{{allow, e.Allow}, {deny, e.Deny}} {
		if len(l.ps) == 0 {
			continue
		}
		if err := c.SetAddElements(l.set, intervalElements(l.ps)); err != nil {
			return fmt.Errorf("egress policy of %s: set %s: %w", ifname, l.set.Name, err)
		}
	}
	// Allow entries are exceptions to Deny: they end the slot's policy and
	// leave the packet to the pool's rules.
	c.AddRule(&nftables.Rule{Table: t.table, Chain: chain, Exprs: rule(isIPv4(), daddrIn(allow), []expr.Any{verdict(expr.VerdictReturn)})})
	c.AddRule(&nftables.Rule{Table: t.table, Chain: chain, Exprs: rule(isIPv4(), daddrIn(deny),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainEgressReject}})})
	if inspect == nil {
		return nil
	}
	if !e.Inspect {
		return dropInspect()
	}
	// The same decision as egress_<i>, taken before routing: what the
	// policy denies, on the inspected ports, goes to the inspector on the
	// slot's host address (redirect uses the address of the input
	// interface) and so never reaches forward. As everywhere in this inet
	// table, the rules match IPv4 first, before reading IPv4 header fields.
	c.AddRule(&nftables.Rule{Table: t.table, Chain: inspect, Exprs: rule(isIPv4(), daddrIn(allow), []expr.Any{verdict(expr.VerdictReturn)})})
	c.AddRule(&nftables.Rule{Table: t.table, Chain: inspect, Exprs: rule(isIPv4(), daddrIn(deny), l4proto(unix.IPPROTO_TCP),
		dportIn(t.inspectPortsSet()), redirectTo(t.cfg.InspectPort))})
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
