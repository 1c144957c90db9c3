package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/microvm"

	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// Device IDs the driver gives Firecracker.
const (
	rootDriveID = "rootfs"
	ifaceID     = "eth0"
	// statsIntervalS enables balloon statistics (Pause reads the guest's free memory); it
	// can never be turned on after boot.
	statsIntervalS = 1
)

// Create implements runtime.Driver: a fresh root disk, a new Firecracker in the slot's
// netns, the VM configured and booted, then envd's /health.
func (d *Driver) Create(ctx context.Context, s runtime.Spec) (err error) {
	start := time.Now()
	if err := checkSpec(s); err != nil {
		return err
	}
	if d.get(s.ID) != nil {
		return fmt.Errorf("create %s: already running", s.ID)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	img, err := microvm.EnsureImage(ctx, microvm.ImageOptions{Dir: d.cfg.ImageDir, FreeMiB: s.DiskMiB, Log: d.log}, s.Template)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	disk := filepath.Join(s.Dir, rootfsFile)
	if err := microvm.CloneFile(ctx, img, disk); err != nil {
		return fmt.Errorf("create %s: copy root disk: %w", s.ID, err)
	}
	if err := d.ownForVM(disk); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	l, err := d.newLayout(s.ID)
	if err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	v := &vm{id: s.ID, lay: l}
	defer func() {
		if err != nil {
			if serr := d.stop(context.WithoutCancel(ctx), v); serr != nil {
				d.log.Warn("cleanup after failed create", "id", s.ID, "err", serr)
			}
		}
	}()
	if err := d.prepareRoot(l); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := linkOrCopy(d.cfg.Kernel, l.host(kernelFile)); err != nil {
		return fmt.Errorf("create %s: kernel: %w", s.ID, err)
	}
	if d.cfg.Initrd != "" {
		if err := linkOrCopy(d.cfg.Initrd, l.host(initrdFile)); err != nil {
			return fmt.Errorf("create %s: initrd: %w", s.ID, err)
		}
	}
	if err := l.link(disk, rootfsFile); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if v.proc, v.api, err = d.start(ctx, s, l); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := d.boot(ctx, v, s); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	if err := v.proc.waitEnvd(ctx, s.EnvdAddr()); err != nil {
		return fmt.Errorf("create %s: %w; log: %s", s.ID, err, runtime.LogTail(filepath.Join(s.Dir, logFile), -1, 12))
	}
	d.put(v)
	d.log.Debug("created", "id", s.ID, "vm", l.vmID, "pid", v.proc.pid(), "took", time.Since(start))
	return nil
}

// boot configures the fresh Firecracker of v and starts the VM.
func (d *Driver) boot(ctx context.Context, v *vm, s runtime.Spec) error {
	c, l := v.api, v.lay
	boot := api.BootSource{KernelImagePath: l.guest(kernelFile), BootArgs: bootArgs(s, d.cfg.Initrd != "", d.cfg.Init)}
	if d.cfg.Initrd != "" {
		boot.InitrdPath = l.guest(initrdFile)
	}
	steps := []func() error{
		func() error {
			return c.PutMachineConfig(ctx, api.MachineConfig{VCPUCount: vcpus(s), MemSizeMiB: guestMemMiB(s)})
		},
		func() error { return c.PutBootSource(ctx, boot) },
		func() error {
			return c.PutDrive(ctx, api.Drive{DriveID: rootDriveID, PathOnHost: l.guest(rootfsFile), IsRootDevice: true})
		},
		func() error {
			return c.PutNetworkInterface(ctx, api.NetworkInterface{IfaceID: ifaceID, HostDevName: netslot.TAPName,
				GuestMAC: guestMAC, TxRateLimiter: api.TxRateLimiter()})
		},
		// deflate_on_oom: a guest that needs the memory back gets it, rather than being
		// OOM-killed because Pause's inflation was still in place.
		func() error {
			return c.PutBalloon(ctx, api.Balloon{AmountMiB: 0, DeflateOnOOM: true, StatsPollingIntervalS: statsIntervalS})
		},
		func() error { return c.PutEntropy(ctx, api.Entropy{}) },
		func() error {
			return c.PutMMDSConfig(ctx, api.MMDSConfig{Version: api.MMDSv2, NetworkInterfaces: []string{ifaceID}})
		},
		func() error { return c.PutMMDS(ctx, identity(s)) },
		func() error { return c.StartInstance(ctx) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// prepareRoot makes l's root fresh and, under the jailer, owned by the uid Firecracker runs
// as: it creates its API socket there.
func (d *Driver) prepareRoot(l layout) error {
	if err := l.create(); err != nil {
		return err
	}
	return d.ownForVM(l.root)
}

// ownForVM hands a file the VM writes to the uid/gid a jailed Firecracker runs as.
func (d *Driver) ownForVM(path string) error {
	if d.cfg.Jailer == "" {
		return nil
	}
	if err := os.Chown(path, d.cfg.UID, d.cfg.GID); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// linkOrCopy puts a read-only file (kernel, initrd) at dst: a hard link when src is on the
// same filesystem, else a copy.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil || errors.Is(err, os.ErrExist) {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
