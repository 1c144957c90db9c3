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
// one set element (and the slot's own egress objects, below) and never
// rewrites the shared rules:
//
//	prerouting (raw):  from slot_ifs, source not routed back via that veth -> drop (anti-spoofing)
//	input:             from slot_ifs: established -> accept; dport in host_ports -> accept;
//	                   [tcp dport InspectPort, ct status dnat -> accept]; else drop
//	forward:           to slot_ifs: established -> accept, else drop (no sandbox-to-sandbox,
//	                   nothing from outside initiates to a sandbox);
//	                   from slot_ifs: non-IPv4 -> drop; iifname vmap @slot_egress (the
//	                   sandbox's own policy, below); allowed nets -> accept;
//	                   denied nets (private ranges by default) -> drop; else accept
//	postrouting (nat): ip saddr in pool, oifname not in slot_ifs -> masquerade
//	[prerouting_nat (nat, dstnat): iifname vmap @slot_inspect]
//
// The bracketed parts exist only in a pool with Config.InspectPort.
//
// A sandbox's own egress policy ([Egress], [WithEgress], [Pool.SetEgress])
// lives in objects of its slot index i, written in the same transaction as
// its slot_ifs element, removed in the same transaction as that element, and
// replaced in one transaction; a policy without Deny entries restricts
// nothing and has none:
//
//	slot_egress (map):  <prefix>-h<i> : jump egress_<i>
//	egress_<i>:         ip daddr @egress_allow_<i> return; ip daddr @egress_deny_<i> jump egress_reject
//	egress_allow_<i>,
//	egress_deny_<i>:    the policy's prefixes (interval sets)
//	egress_reject:      tcp -> reject with tcp reset; else reject with icmpx port-unreachable
//	slot_inspect (map): <prefix>-h<i> : jump inspect_<i>    (only with Egress.Inspect)
//	inspect_<i>:        ip daddr @egress_allow_<i> return;
//	                    ip daddr @egress_deny_<i> tcp dport @inspect_ports (80, 443) redirect to :InspectPort
//
// The policy runs before the pool's nets so that its Deny wins over
// AllowNets; its Allow only returns to them, so DenyNets (and the drop of
// sandbox-to-sandbox traffic before it) still apply. Denied traffic is
// rejected rather than dropped so that clients fail at once. Traffic from a
// sandbox has no "established" shortcut, so a policy change also applies to
// connections already open. A slot without a policy costs one failed map
// lookup per packet. Kernel features used: NFT_REJECT, NFT_REJECT_INET.
//
// With Inspect, the slot's denied HTTP and HTTPS connections are
// redirected, before routing, to the inspector on the slot's host address,
// so they reach input instead of forward; input lets them in by their
// conntrack DNAT status, which a sandbox connecting to the port itself
// does not have. The redirect is decided on a connection's first packet
// and lasts as long as the connection: a policy change does not move open
// connections away from the inspector. The inspector dials from the host,
// outside these rules, so it checks [Pool.InspectAllowed] itself. Kernel
// features used: NFT_NAT, NFT_REDIR, NFT_CT.
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
