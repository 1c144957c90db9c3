// Package netslot gives every sandbox its own network slot: a named network
// namespace joined to the host by a veth pair, an optional TAP for microVMs,
// NAT for egress, isolation rules and an egress rate limit. All of it is
// built from real kernel objects through netlink and nftables; nothing shells
// out to ip, nft or tc.
//
// # Addressing
//
// The pool CIDR (default 10.200.0.0/16) is cut into /30 blocks; block i is
// slot i. In block b:
//
//	b+1  host end of the veth, in the root namespace (<prefix>-h<i>)
//	b+2  the sandbox's address: on eth0 inside the namespace <prefix>-<i>
//
// The host only ever sees b+2 as "the sandbox", whatever runtime is used:
//
//   - Containers (gVisor): eth0 carries b+2/30 and a default route via b+1.
//     runsc --network=sandbox takes eth0 over with its own netstack and copies
//     its IP and MAC; it also strips them from the kernel interface, which is
//     why [Slot.RestoreGuestAddr] exists and must run before every restore.
//     The MAC is derived from the slot address so that a restore into the
//     same slot keeps the neighbour entries on the host valid.
//   - MicroVMs (QEMU, Firecracker), with [WithTAP]: tap0 sits in the same
//     namespace with [VMGatewayAddr]/30 and the VM is configured with the
//     fixed address [VMGuestAddr] and gateway [VMGatewayAddr]. A small
//     nftables table inside the namespace DNATs b+2 to the VM and SNATs the
//     VM's traffic back to b+2. Because the address inside the VM never
//     depends on the slot, a VM snapshot can be restored into any slot.
//
// # nftables layout
//
// One table per prefix (family inet, named after the prefix) holds every
// host-side rule. Sandboxes are recognised by the name of their host veth,
// kept in the set slot_ifs, so acquiring or releasing a slot adds or removes
// one set element and never rewrites rules:
//
//	prerouting (raw):  from slot_ifs, source not routed back via that veth -> drop (anti-spoofing)
//	input:             from slot_ifs: established -> accept; dport in host_ports -> accept; else drop
//	forward:           to slot_ifs: established -> accept, else drop (no sandbox-to-sandbox,
//	                   nothing from outside initiates to a sandbox);
//	                   from slot_ifs: non-IPv4 -> drop; allowed nets -> accept;
//	                   denied nets (private ranges by default) -> drop; else accept
//	postrouting (nat): ip saddr in pool, oifname not in slot_ifs -> masquerade
//
// Connections the host opens to a sandbox (the agent's proxy) leave through
// the output hook, which the table does not filter; their replies are
// "established" in input.
//
// # Rate limit direction
//
// The sandbox's egress enters the host through the host end of its veth, so
// the limit sits there: the veth's ingress redirects every frame (u32
// match-all filter, mirred action) to an IFB device of the slot
// (<prefix>-i<i>), whose root TBF shapes it to [EgressRateBytesPerSec] with a
// [EgressBurstBytes] bucket. Shaping eth0's egress inside the namespace would
// not work with gVisor, which takes eth0 over and writes frames through its
// own packet endpoint; the host side also lies out of reach of anything
// running in the sandbox. An ingress police action would need no IFB, but it
// drops instead of queueing and is not built into every kernel
// (CONFIG_NET_ACT_POLICE is unset on the development machines). Kernel
// features used: IFB, NET_SCH_INGRESS, NET_CLS_U32, NET_ACT_MIRRED,
// NET_SCH_TBF.
package netslot
