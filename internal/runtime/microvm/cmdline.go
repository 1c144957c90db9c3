package microvm

import (
	"bufio"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hearthsh/hearth/internal/netslot"
)

// GuestMAC is the MAC address of every VM's eth0. Each VM is alone behind its slot's tap0,
// so one fixed, locally administered address serves all and survives restores into other
// slots.
const GuestMAC = "02:48:a9:fe:00:02"

// GuestConfig is what the guest init reads from the kernel command line.
type GuestConfig struct {
	// Hostname of the guest; default "sandbox".
	Hostname string
	// DNS replaces the root filesystem's resolv.conf when set; empty keeps the template's.
	DNS []netip.Addr
	// TSCKHz is the host TSC frequency; 0 detects it with HostTSCKHz.
	TSCKHz int
	// Extra parameters, appended last (the kernel takes the last of repeated ones).
	Extra []string
}

// KernelCmdline returns the guest kernel command line for g.
//
// tsc_early_khz and tsc=reliable are required under TCG on -machine microvm: without a
// HPET or ACPI PM timer the kernel's TSC calibration against the PIT fails most of the time
// and the boot hangs (5 of 17 boots succeeded without them, 0 failures in 90+ with them).
// reboot=t and panic=-1 make a dying guest reset at once, which a VMM run with -no-reboot
// turns into its own exit.
//
// init_on_alloc=0 turns off Debian's default zeroing of every page the guest kernel
// allocates. With it on, the balloon does not shrink the memory file: inflating a 512 MiB
// guest to 128 MiB grew the file's allocation from 122 to 419 MiB, where with it off the
// same inflation took it down to 110 MiB. Pages are still zeroed before they reach user
// space; only the kernel-internal hardening against uninitialised allocations is lost.
func KernelCmdline(g GuestConfig) (string, error) {
	khz := g.TSCKHz
	if khz == 0 {
		var err error
		if khz, err = HostTSCKHz(); err != nil {
			return "", err
		}
	}
	host := g.Hostname
	if host == "" {
		host = "sandbox"
	}
	if strings.ContainsAny(host, " \t\n") {
		return "", fmt.Errorf("hostname %q contains blanks", host)
	}
	args := []string{
		"console=ttyS0", "reboot=t", "panic=-1", "quiet", "loglevel=4", "8250.nr_uarts=1", "init_on_alloc=0",
		fmt.Sprintf("tsc_early_khz=%d", khz), "tsc=reliable",
		"hearth.ip=" + netip.PrefixFrom(netslot.VMGuestAddr, netslot.VMPrefixLen).String(),
		"hearth.gw=" + netslot.VMGatewayAddr.String(),
		"hearth.hostname=" + host,
	}
	if len(g.DNS) > 0 {
		var ds []string
		for _, d := range g.DNS {
			ds = append(ds, d.String())
		}
		args = append(args, "hearth.dns="+strings.Join(ds, ","))
	}
	return strings.Join(append(args, g.Extra...), " "), nil
}

// HostTSCKHz returns the host's TSC frequency in kHz: the kernel's own figure when it
// exports one, else the first "cpu MHz" of /proc/cpuinfo.
func HostTSCKHz() (int, error) {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			return v, nil
		}
	}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("host TSC frequency: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("host TSC frequency: bad cpu MHz %q", v)
		}
		return int(math.Round(mhz * 1000)), nil
	}
	return 0, fmt.Errorf("host TSC frequency: no cpu MHz in /proc/cpuinfo")
}
