package netslot

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders for the nftables expressions the tables use. Each returns
// a match fragment working on register 1; rules are fragments joined and
// ended with a verdict.

const ifNameSize = unix.IFNAMSIZ

// ifnameKey encodes an interface name the way nftables stores it.
func ifnameKey(name string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return b
}

func portKey(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

func metaIn(key expr.MetaKey, set *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: invert},
	}
}

func iifIn(set *nftables.Set) []expr.Any { return metaIn(expr.MetaKeyIIFNAME, set, false) }
func oifIn(set *nftables.Set) []expr.Any { return metaIn(expr.MetaKeyOIFNAME, set, false) }

// iifVmap is "iifname vmap @set": the verdict the map holds for the input
// interface, or nothing (evaluation goes on) when it holds none.
func iifVmap(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true},
	}
}

func ifnameIs(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey(name)},
	}
}

func isIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func notIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// IPv4 header offsets of the source and destination address.
const (
	offSaddr = 12
	offDaddr = 16
)

// ipAddrIn matches an IPv4 address field against a prefix. Callers put
// isIPv4 first in inet tables.
func ipAddrIn(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	if p.Bits() == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	net := p.Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net[:]},
	}
}

func ipAddrIs(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

func daddrIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offDaddr, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// intervalElements encodes IPv4 prefixes as the elements of an interval
// set, the way nft does: each range [first, last] is a start element at
// first and an end element at last+1, left out when last is
// 255.255.255.255. The kernel refuses overlapping ranges, so nested and
// adjacent prefixes are merged first.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	type span struct{ first, last uint64 }
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		a := p.Masked().Addr().As4()
		first := uint64(binary.BigEndian.Uint32(a[:]))
		spans = append(spans, span{first, first + 1<<(32-p.Bits()) - 1})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.first, b.first) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.first <= merged[n-1].last+1 {
			merged[n-1].last = max(merged[n-1].last, s.last)
			continue
		}
		merged = append(merged, s)
	}
	key := func(v uint64) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	var elems []nftables.SetElement
	for _, s := range merged {
		elems = append(elems, nftables.SetElement{Key: key(s.first)})
		if s.last < 1<<32-1 {
			elems = append(elems, nftables.SetElement{Key: key(s.last + 1), IntervalEnd: true})
		}
	}
	return elems
}

func dportIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func dportIs(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: portKey(port)},
	}
}

// ctStatusDNAT is IPS_DST_NAT, set on connections whose destination NAT
// (here: redirect) changed.
const ctStatusDNAT uint32 = 1 << 5

// ctDNAT is "ct status dnat".
func ctDNAT() []expr.Any {
	mask := binary.NativeEndian.AppendUint32(nil, ctStatusDNAT)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// redirectTo is "redirect to :port": destination NAT to the primary
// address of the input interface, port port. The port goes in a register;
// the flag says the range holds a port, as nft sets it.
func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: portKey(port)},
		&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

func ctEstablished() []expr.Any {
	mask := binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// srcNotRoutedViaIif is reverse-path filtering ("fib saddr . iif oif 0"):
// the packet's source address is not reachable through the interface it
// came in on, i.e. it is spoofed.
func srcNotRoutedViaIif() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func rule(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
