package firecracker

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
)

// guestMAC is eth0's MAC in every VM: each VM is alone behind its slot's tap0, and a fixed
// MAC keeps the neighbour entry in the slot valid across snapshot and restore.
const guestMAC = "02:fc:00:00:00:02"

// bootArgs is the guest kernel's command line for sandbox s. The base is what Firecracker
// guests use (serial console, reboot = exit, panic = exit, no PCI bus); the network is the
// kernel's own IP autoconfiguration with the fixed VM address behind the slot's tap0; the
// sandbox's identity is in hearth.* parameters the guest init and envd can read from
// /proc/cmdline. Without an initrd the kernel mounts the ext4 root disk itself and runs init.
func bootArgs(s runtime.Spec, withInitrd bool, init string) string {
	mask := netip.PrefixFrom(netslot.VMGatewayAddr, netslot.VMPrefixLen)
	args := []string{
		"console=ttyS0", "reboot=k", "panic=1", "pci=off",
		// ip=<client>::<gateway>:<netmask>::<device>:<autoconf>
		fmt.Sprintf("ip=%s::%s:%s::eth0:off", netslot.VMGuestAddr, netslot.VMGatewayAddr, netmask(mask)),
		"random.trust_cpu=on",
		"hearth.sandbox_id=" + s.ID,
	}
	if s.Template.Name != "" {
		args = append(args, "hearth.template="+s.Template.Name)
	}
	if !withInitrd {
		args = append(args, "root=/dev/vda", "rw", "rootfstype=ext4", "init="+init)
	}
	return strings.Join(args, " ")
}

// netmask renders the dotted netmask of p's length.
func netmask(p netip.Prefix) string {
	bits := p.Bits()
	m := ^uint32(0) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

// identity is what MMDS holds for the guest.
func identity(s runtime.Spec) map[string]any {
	return map[string]any{"hearth": map[string]string{"sandbox_id": s.ID, "template": s.Template.Name}}
}
