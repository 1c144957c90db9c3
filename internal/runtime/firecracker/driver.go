// Package firecracker is the runtime driver for Firecracker microVMs on KVM hosts.
//
// Each sandbox is one Firecracker process, started through the jailer when one is
// configured (chroot, cgroups, dropped privileges, --netns) or else directly with
// `nsenter --net=<slot netns> firecracker --api-sock`. Both ways the VM sees the same world:
// a root directory under Config.RunDir holding the kernel, the sandbox's rootfs and the API
// and uffd sockets, so every path the driver sends Firecracker is computed one way (layout).
// The guest gets the slot's tap0 as eth0 with the fixed address 169.254.0.2 (netslot NATs it
// to the slot's address), an ext4 root disk copied per sandbox from a per-template image, a
// balloon, an entropy device and its identity on the kernel command line and in MMDS.
//
// Pause inflates the balloon, pauses the vCPUs, takes a Full snapshot into a temp dir that is
// renamed into <sandbox dir>/snapshot only when complete, and kills Firecracker; on any
// failure the VM is resumed and left running. Resume serves the snapshot's memory with the
// userfaultfd server of internal/uffd, loads the snapshot into a new Firecracker with the
// Uffd backend, resumes the vCPUs, deflates the balloon and waits for envd.
package firecracker

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

	"github.com/hearthsh/hearth/internal/cgroups"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// Config configures the driver.
type Config struct {
	// Firecracker is the firecracker binary (static, the same version as the jailer).
	Firecracker string
	// Jailer is the jailer binary; empty runs Firecracker directly (no chroot, no cgroups,
	// no privilege drop: for development hosts only).
	Jailer string
	// UID and GID Firecracker runs as under the jailer.
	UID, GID int
	// CgroupParent is the jailer's --parent-cgroup; Reclaim removes everything below it.
	// Default "hearth-firecracker".
	CgroupParent string
	// Kernel is the guest kernel: an uncompressed vmlinux (ELF), as Firecracker requires on
	// x86-64, with virtio-mmio block, net, balloon and rng built in.
	Kernel string
	// Initrd is an optional initramfs. With one, the kernel runs its /init (Hearth's guest
	// init mounts the root disk and starts envd); without one the kernel mounts /dev/vda
	// itself and runs Init.
	Initrd string
	// Init is the guest's init when there is no Initrd. Default "/usr/bin/envd".
	Init string
	// RunDir holds one root directory per running VM (the jailer's --chroot-base-dir). It
	// must be on the filesystem of the sandbox dirs, since files are hard-linked into it,
	// and be private to this agent: Reclaim empties it.
	RunDir string
	// ImageDir caches one ext4 image per template version.
	ImageDir string
	// IDPrefix names this agent's VMs (Firecracker --id <prefix>-<sandbox>); Reclaim kills
	// only processes with that prefix. Default "hearth".
	IDPrefix string
	// BalloonTimeout bounds how long Pause waits for the guest to inflate the balloon
	// before it snapshots anyway. Default 2 s.
	BalloonTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Driver is the Firecracker runtime driver. It implements runtime.Driver.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu  sync.Mutex
	vms map[string]*vm // running VMs by sandbox ID
}

var _ runtime.Driver = (*Driver)(nil)

// New checks the configuration and returns a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "hearth"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "hearth-firecracker"
	}
	if cfg.Init == "" {
		cfg.Init = "/usr/bin/envd"
	}
	if cfg.BalloonTimeout == 0 {
		cfg.BalloonTimeout = 2 * time.Second
	}
	if cfg.RunDir == "" || cfg.ImageDir == "" {
		return nil, errors.New("firecracker: RunDir and ImageDir are required")
	}
	bins := []string{cfg.Firecracker}
	if cfg.Jailer != "" {
		bins = append(bins, cfg.Jailer)
	} else if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, fmt.Errorf("firecracker: without a jailer, nsenter is needed to enter the slot's netns: %w", err)
	}
	for _, b := range bins {
		if fi, err := os.Stat(b); err != nil || fi.Mode()&0o111 == 0 || b == "" {
			return nil, fmt.Errorf("firecracker: binary %q not usable: %v", b, err)
		}
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return nil, fmt.Errorf("firecracker: guest kernel: %w", err)
	}
	for _, d := range []string{cfg.RunDir, cfg.ImageDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
	}
	return &Driver{cfg: cfg, log: cfg.Logger.With("runtime", "firecracker"), vms: map[string]*vm{}}, nil
}

// vm is a running Firecracker process and what serves it.
type vm struct {
	id   string
	lay  layout
	proc *process
	api  *api.Client
	// memServer is the uffd server of a restored VM (nil for a booted one).
	memServer *memServer
}

func (d *Driver) get(id string) *vm {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vms[id]
}

func (d *Driver) put(v *vm) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vms[v.id] = v
}

func (d *Driver) take(id string) *vm {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vms[id]
	delete(d.vms, id)
	return v
}

// checkSpec rejects a spec the driver cannot run.
func checkSpec(s runtime.Spec) error {
	if s.ID == "" || s.Dir == "" || s.Template.RootFS == "" || s.Net.NetNS == "" || !s.Net.GuestIP.IsValid() {
		return fmt.Errorf("sandbox %q: incomplete spec (need ID, Dir, Template.RootFS, Net)", s.ID)
	}
	return nil
}

// stop kills v's Firecracker, waits for it, stops its memory server and removes its root
// directory and cgroup. The sandbox dir (disk, snapshot) is left alone.
func (d *Driver) stop(ctx context.Context, v *vm) error {
	var errs []error
	if v.api != nil {
		v.api.Close()
	}
	if v.proc != nil {
		if err := v.proc.kill(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if v.memServer != nil {
		v.memServer.stop()
	}
	if d.cfg.Jailer != "" {
		if err := cgroups.Remove(ctx, filepath.Join(d.cfg.CgroupParent, v.lay.vmID)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(v.lay.jail); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var _ runtime.TAPDriver = (*Driver)(nil)

// NeedsTAP implements runtime.TAPDriver: every VM's eth0 is the slot's tap0.
func (d *Driver) NeedsTAP() bool { return true }

var _ runtime.TemplateDropper = (*Driver)(nil)

// DropTemplate implements runtime.TemplateDropper: the root filesystem images of a deleted
// template version (one per disk size) go, or they would fill the disk one version at a time.
func (d *Driver) DropTemplate(ctx context.Context, name string) error {
	return microvm.DropImages(ctx, d.cfg.ImageDir, name)
}
