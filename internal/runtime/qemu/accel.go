package qemu

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// probeTimeout bounds the KVM probe boot; a working KVM reaches the guest init in well
// under a second, a broken one (kvm_pvm running a normal kernel through its instruction
// emulator) never does.
const probeTimeout = 12 * time.Second

// accelerator returns the accelerator VMs use, probing KVM once for AccelAuto.
func (d *Driver) accelerator(ctx context.Context, k microvm.Kernel) (string, error) {
	if d.cfg.Accel != AccelAuto {
		return d.cfg.Accel, nil
	}
	d.mu.Lock()
	a := d.accel
	d.mu.Unlock()
	if a != "" {
		return a, nil
	}
	a = AccelTCG
	if kvmWorks(ctx, d.cfg.QEMU, k) {
		a = AccelKVM
	}
	d.log.Info("accelerator chosen", "accel", a)
	d.mu.Lock()
	d.accel = a
	d.mu.Unlock()
	return a, nil
}

// kvmWorks boots the guest kernel with -accel kvm and no devices and reports whether the
// guest init printed its first line. /dev/kvm existing proves nothing: on PVM hosts it
// accepts VMs it cannot run.
func kvmWorks(ctx context.Context, qemuBin string, k microvm.Kernel) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	cmdline, err := microvm.KernelCmdline(microvm.GuestConfig{})
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, "-machine", "microvm,pit=on,pic=on,rtc=on", "-accel", "kvm",
		"-cpu", "host", "-m", "256M", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-kernel", k.Kernel, "-initrd", k.Initrd, "-append", cmdline)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return false
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), microvm.InitUpMarker) {
			return true
		}
	}
	return false
}
