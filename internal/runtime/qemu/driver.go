// Package qemu is the QEMU runtime driver: every sandbox is a `qemu-system-x86_64 -machine
// microvm` guest booted from Debian's cloud kernel, with its root filesystem as a qcow2
// overlay on the template's read-only ext4 image, virtio-net on the slot's tap0 and a
// virtio balloon. It has the shape of the Firecracker driver (guest RAM in a file, a small
// device-state file, vCPU stop/cont, balloon reclaim before a snapshot) so the whole VM path
// of pause and resume runs for real on hosts without KVM, under TCG.
//
// Layout of a sandbox dir while the VM runs: mem (guest RAM, mapped shared), disk.qcow2 (the
// root filesystem overlay), qmp.sock, console.log (guest serial console), qemu.log (QEMU's
// stderr) and vm.json (how the VM was started). A paused sandbox has snapshot/ with state
// (QEMU's device state), mem, disk.qcow2 and vm.json, and no VM.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// Files the driver keeps in a sandbox dir.
const (
	memFile     = "mem"
	diskFile    = "disk.qcow2"
	qmpSock     = "qmp.sock"
	consoleLog  = "console.log"
	qemuLog     = "qemu.log"
	vmConfFile  = "vm.json"
	stateFile   = "state"
	snapshotDir = "snapshot"
	tmpSuffix   = ".tmp"
)

// Accelerator choices for Config.Accel.
const (
	AccelAuto = "auto" // KVM when a probe boot proves it works, else TCG
	AccelTCG  = "tcg"
	AccelKVM  = "kvm"
)

// Config configures the driver.
type Config struct {
	// DataDir is the agent's VM data dir, <data>/vm: kernel/ and images/ cache the guest
	// kernel and the template images, run/ holds one pid file per VM, whose path in QEMU's
	// command line marks the VM as this agent's for Reclaim.
	DataDir string
	// QEMU and QEMUImg are the binaries; default qemu-system-x86_64 and qemu-img on PATH.
	QEMU    string
	QEMUImg string
	// Accel is AccelAuto (default), AccelTCG or AccelKVM.
	Accel string
	// Kernel overrides the guest kernel and initramfs (both must be set); default: Debian's
	// cloud kernel fetched by microvm.EnsureKernel.
	Kernel *microvm.Kernel
	// Guest configures the guest's DNS and extra kernel parameters; the hostname is the
	// sandbox ID.
	Guest microvm.GuestConfig
	// NoBalloon skips the balloon inflation before a snapshot (to measure what it saves).
	NoBalloon bool
	// Reclaim tunes the balloon inflation.
	Reclaim microvm.ReclaimOptions
	Logger  *slog.Logger
}

// Driver is the QEMU runtime driver. It implements runtime.Driver.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	procs  map[string]*vmProc
	kernel *microvm.Kernel
	accel  string
}

var _ runtime.Driver = (*Driver)(nil)

// New checks the configuration and returns a driver. The guest kernel is fetched on first
// use (or by Prepare), not here.
func New(cfg Config) (*Driver, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("qemu: DataDir is required")
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.QEMUImg == "" {
		cfg.QEMUImg = "qemu-img"
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelAuto
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch cfg.Accel {
	case AccelAuto, AccelTCG, AccelKVM:
	default:
		return nil, fmt.Errorf("qemu: unknown accelerator %q", cfg.Accel)
	}
	for _, bin := range []*string{&cfg.QEMU, &cfg.QEMUImg} {
		p, err := exec.LookPath(*bin)
		if err != nil {
			return nil, fmt.Errorf("qemu: %s not found (install qemu-system-x86 and qemu-utils): %w", *bin, err)
		}
		*bin = p
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, fmt.Errorf("qemu: nsenter not found (util-linux): %w", err)
	}
	if cfg.Kernel != nil && (cfg.Kernel.Kernel == "" || cfg.Kernel.Initrd == "") {
		return nil, errors.New("qemu: Config.Kernel needs both Kernel and Initrd")
	}
	if err := os.MkdirAll(runDir(cfg.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return &Driver{cfg: cfg, log: cfg.Logger.With("runtime", "qemu"), procs: map[string]*vmProc{}, kernel: cfg.Kernel}, nil
}

// NeedsTAP reports that sandboxes of this driver attach to the slot's tap0, so the agent
// acquires slots with netslot.WithTAP (see runtime.TAPDriver).
func (d *Driver) NeedsTAP() bool { return true }

func runDir(dataDir string) string { return filepath.Join(dataDir, "run") }

// Prepare fetches the guest kernel and decides the accelerator, so the first Create does not
// pay for it. Optional.
func (d *Driver) Prepare(ctx context.Context) error {
	k, err := d.guestKernel(ctx)
	if err != nil {
		return err
	}
	_, err = d.accelerator(ctx, k)
	return err
}

// guestKernel returns the guest kernel, fetching it once.
func (d *Driver) guestKernel(ctx context.Context) (microvm.Kernel, error) {
	d.mu.Lock()
	k := d.kernel
	d.mu.Unlock()
	if k != nil {
		return *k, nil
	}
	got, err := microvm.EnsureKernel(ctx, microvm.KernelOptions{Dir: filepath.Join(d.cfg.DataDir, "kernel"), Log: d.log})
	if err != nil {
		return microvm.Kernel{}, fmt.Errorf("qemu: %w", err)
	}
	d.mu.Lock()
	d.kernel = &got
	d.mu.Unlock()
	return got, nil
}

func validSpec(s runtime.Spec) error {
	if s.ID == "" || s.Dir == "" || s.Net.NetNS == "" || !s.Net.GuestIP.IsValid() {
		return fmt.Errorf("sandbox %q: incomplete spec (need ID, Dir, Net)", s.ID)
	}
	if s.CPUs < 1 || s.MemoryMiB < 128 {
		return fmt.Errorf("sandbox %s: a VM needs at least 1 CPU and 128 MiB (got %d, %d)", s.ID, s.CPUs, s.MemoryMiB)
	}
	return nil
}

// Create implements runtime.Driver.
func (d *Driver) Create(ctx context.Context, s runtime.Spec) (err error) {
	start := time.Now()
	if err := validSpec(s); err != nil {
		return err
	}
	if s.Template.RootFS == "" {
		return fmt.Errorf("create %s: template has no RootFS", s.ID)
	}
	k, err := d.guestKernel(ctx)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	accel, err := d.accelerator(ctx, k)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	image, err := microvm.EnsureImage(ctx, microvm.ImageOptions{Dir: filepath.Join(d.cfg.DataDir, "images"), FreeMiB: s.DiskMiB, Log: d.log}, s.Template)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	defer func() {
		if err != nil {
			d.stopVM(s)
		}
	}()
	// A leftover memory file would be booted as if it were RAM; a leftover overlay would
	// carry another life's writes.
	for _, f := range []string{memFile, diskFile} {
		if err := os.Remove(filepath.Join(s.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("create %s: %w", s.ID, err)
		}
	}
	if _, err := runCmd(ctx, d.cfg.QEMUImg, "create", "-q", "-f", "qcow2", "-b", image, "-F", "raw",
		filepath.Join(s.Dir, diskFile)); err != nil {
		return fmt.Errorf("create %s: overlay: %w", s.ID, err)
	}
	cmdline, err := d.cmdline(s)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	conf := vmConf{
		CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, Kernel: k.Kernel, Initrd: k.Initrd,
		Cmdline: cmdline, Accel: accel, Image: image,
	}
	p, err := d.launch(ctx, s, conf, "")
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := writeJSON(filepath.Join(s.Dir, vmConfFile), conf); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := d.waitEnvd(ctx, s, p); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	d.log.Debug("created", "id", s.ID, "accel", accel, "took", time.Since(start))
	return nil
}

func (d *Driver) cmdline(s runtime.Spec) (string, error) {
	g := d.cfg.Guest
	g.Hostname = s.ID
	return microvm.KernelCmdline(g)
}

// waitEnvd waits for envd's /health; on failure the error carries the console's tail.
func (d *Driver) waitEnvd(ctx context.Context, s runtime.Spec, p *vmProc) error {
	if err := runtime.WaitEnvd(ctx, s.EnvdAddr(), p.done); err != nil {
		return fmt.Errorf("%w; %s", err, vmLogs(s.Dir))
	}
	return nil
}

// vmLogs is the tail of the guest console and QEMU's own log, for error messages.
func vmLogs(dir string) string {
	return fmt.Sprintf("console: %s; qemu.log: %s",
		runtime.LogTail(filepath.Join(dir, consoleLog), -1, 12), runtime.LogTail(filepath.Join(dir, qemuLog), -1, 6))
}

// Destroy implements runtime.Driver.
func (d *Driver) Destroy(_ context.Context, s runtime.Spec) error {
	if s.ID == "" {
		return errors.New("destroy: sandbox without ID")
	}
	if err := d.stopVM(s); err != nil {
		return fmt.Errorf("destroy %s: %w", s.ID, err)
	}
	if s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			return fmt.Errorf("destroy %s: %w", s.ID, err)
		}
	}
	return nil
}

var _ runtime.TemplateDropper = (*Driver)(nil)

// DropTemplate implements runtime.TemplateDropper: the root filesystem images of a deleted
// template version (one per disk size) go, or they would fill the disk one version at a time.
func (d *Driver) DropTemplate(ctx context.Context, name string) error {
	return microvm.DropImages(ctx, filepath.Join(d.cfg.DataDir, "images"), name)
}
