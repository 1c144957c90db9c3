package netslot

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The sandbox egress limit, the same figures the Firecracker driver gives
// its tx_rate_limiter (refill 200 MB/s, 100 MB bucket). MB is 10^6 bytes.
const (
	EgressRateBytesPerSec = 200 * 1000 * 1000
	EgressBurstBytes      = 100 * 1000 * 1000

	// egressQueueBytes is how much the shaper queues once the bucket is
	// empty before it drops: 20 ms at the rate, ample for TCP on a veth
	// whose round trip is microseconds, small enough not to bloat.
	egressQueueBytes = EgressRateBytesPerSec / 50
)

// ingressParent is the handle of the ingress qdisc ("ffff:").
var ingressParent = netlink.MakeHandle(0xffff, 0)

// egressTBF is the shaper put on a slot's IFB.
func egressTBF(ifbIndex int) *netlink.Tbf {
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifbIndex,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate:   EgressRateBytesPerSec,
		Buffer: netlink.Xmittime(EgressRateBytesPerSec, EgressBurstBytes),
		Limit:  egressQueueBytes,
	}
}

// applyEgressLimit shapes the traffic a sandbox sends where it enters the
// host, the ingress of the host end of its veth (see the package doc for
// why this side). Ingress cannot queue, so every frame is redirected to the
// slot's IFB device, whose root TBF does the shaping. (A police action on
// the ingress would need no IFB, but it drops instead of queueing and is not
// built into every kernel: CONFIG_NET_ACT_POLICE is unset on ours.)
func applyEgressLimit(hostIf netlink.Link, ifbName string) error {
	ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: ifbName}}
	if err := netlink.LinkAdd(ifb); err != nil {
		return fmt.Errorf("create ifb %s: %w", ifbName, err)
	}
	ifbLink, err := netlink.LinkByName(ifbName)
	if err != nil {
		return fmt.Errorf("find ifb %s: %w", ifbName, err)
	}
	if err := netlink.QdiscAdd(egressTBF(ifbLink.Attrs().Index)); err != nil {
		return fmt.Errorf("add tbf on %s: %w", ifbName, err)
	}
	if err := netlink.LinkSetUp(ifbLink); err != nil {
		return fmt.Errorf("set %s up: %w", ifbName, err)
	}
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: hostIf.Attrs().Index,
		Handle:    ingressParent,
		Parent:    netlink.HANDLE_INGRESS,
	}}
	if err := netlink.QdiscAdd(q); err != nil {
		return fmt.Errorf("add ingress qdisc on %s: %w", hostIf.Attrs().Name, err)
	}
	// A u32 filter without a selector matches every frame.
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: hostIf.Attrs().Index,
			Parent:    ingressParent,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{netlink.NewMirredAction(ifbLink.Attrs().Index)},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("redirect %s ingress to %s: %w", hostIf.Attrs().Name, ifbName, err)
	}
	return nil
}
