// Package gvisor is the default runtime driver: sandboxes are gVisor (runsc) containers on
// the systrap platform, with gVisor's own network stack in the slot's network namespace.
//
// Create boots the sandbox from the template's rootfs, or optionally restores a per-template
// checkpoint of a booted sandbox (see CreateMode). Pause is `runsc checkpoint`, Resume is `runsc
// restore`; the rootfs overlay lives in a host file in the sandbox dir and is part of every
// checkpoint, so file changes survive pause and resume and never reach the template.
package gvisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hearthsh/hearth/internal/cgroups"
	"github.com/hearthsh/hearth/internal/durable"

	"github.com/hearthsh/hearth/internal/runtime"
)

// Files and directories the driver keeps under a sandbox's data dir.
const (
	bundleDir     = "bundle"               // OCI bundle: config.json
	overlayDir    = "overlay"              // holds the (unlinked) rootfs overlay file
	snapshotDir   = "snapshot"             // the pause checkpoint; complete or absent
	runscLog      = logsDir + "/runsc.log" // runsc's own log (--log), appended by every call
	stdioLog      = logsDir + "/stdio.log" // stdout+stderr of create/restore calls and of envd
	debugLogDir   = "debug"                // --debug-log output when Config.Debug
	hostSocketDir = "envd"                 // shared with the sandbox at guestSocketDir; holds envdSocket
	envdSocket    = "envd.sock"            // envd's host Unix socket (see runtime.EnvdSocketDriver)
	tmpSuffix     = ".tmp"                 // work dirs renamed into place when complete
	oldSuffix     = ".old"                 // a replaced snapshot, removed right after
	lockSuffix    = ".lock"                // per-template snapshot build lock
	platform      = "systrap"              // the KVM platform hangs on PVM hosts; ptrace is slower
	defaultCgrp   = "hearth-gvisor"
)

// CreateMode chooses how Create starts a sandbox.
type CreateMode int

const (
	// CreateCold (the default) boots runsc and envd from the template's rootfs. Measured on
	// a 2-core host with the base template: p50 125–150 ms to envd healthy, 17 MiB idle.
	CreateCold CreateMode = iota
	// CreateRestore restores a checkpoint of the template taken once from a booted sandbox
	// with envd ready: p50 141–152 ms, 24 MiB idle on the same host, so no faster for a
	// template whose envd starts in milliseconds. It pays off for templates whose start-up
	// work (a preloaded interpreter, a warmed cache) costs more than loading its pages.
	CreateRestore
)

// Config configures the driver.
type Config struct {
	// Runsc is the runsc binary (built by scripts/build-runsc.sh).
	Runsc string
	// StateDir is runsc's --root, private to this agent: Reclaim deletes everything in it.
	StateDir string
	// SnapshotDir caches one checkpoint per template version for CreateRestore.
	SnapshotDir string
	// CgroupParent is the cgroup (in every hierarchy) under which each sandbox gets its own;
	// Reclaim removes all of it. Default "hearth-gvisor".
	CgroupParent string
	// CreateMode picks cold boot (default) or restore from a template checkpoint.
	CreateMode CreateMode
	// Debug makes runsc write debug logs to <sandbox dir>/debug/.
	Debug bool
	// ReadyTimeout bounds the wait for a template's ready command when its start snapshot is
	// taken; 0 means runtime.DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Driver is the gVisor runtime driver. It implements runtime.Driver.
type Driver struct {
	cfg   Config
	runsc *runsc
	log   *slog.Logger
}

var (
	_ runtime.Driver           = (*Driver)(nil)
	_ runtime.EnvdSocketDriver = (*Driver)(nil)
	_ runtime.AdoptableDriver  = (*Driver)(nil)
)

// Adoptable implements runtime.AdoptableDriver. runsc holds open what it reads of s.Dir
// (the overlay file, the socket and log mounts, which move with the dir) and is given paths
// in it only per call; the container ID stays the one created, and a restore takes any ID.
func (d *Driver) Adoptable() bool { return true }

// EnvdSocket implements runtime.EnvdSocketDriver. runsc runs with --host-uds=create, which
// lets the sandbox create sockets in its host-backed mounts (only the socket dir is one) but
// never connect to host sockets.
func (d *Driver) EnvdSocket(s runtime.Spec) string {
	return filepath.Join(s.Dir, hostSocketDir, envdSocket)
}

// New checks the configuration and returns a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = defaultCgrp
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StateDir == "" || cfg.SnapshotDir == "" {
		return nil, errors.New("gvisor: StateDir and SnapshotDir are required")
	}
	if fi, err := os.Stat(cfg.Runsc); err != nil || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("gvisor: runsc binary %q not usable (build it with make runsc): %v", cfg.Runsc, err)
	}
	for _, d := range []string{cfg.StateDir, cfg.SnapshotDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("gvisor: %w", err)
		}
	}
	log := cfg.Logger.With("runtime", "gvisor")
	return &Driver{
		cfg:   cfg,
		runsc: &runsc{bin: cfg.Runsc, root: cfg.StateDir, platform: platform, debug: cfg.Debug, log: log},
		log:   log,
	}, nil
}

// prepareDir creates the sandbox dir, its overlay dir, its socket and log tmpfs mounts and
// its bundle.
func (d *Driver) prepareDir(s runtime.Spec) (string, error) {
	if s.ID == "" || s.Dir == "" || s.Template.RootFS == "" || s.Net.NetNS == "" || !s.Net.GuestIP.IsValid() {
		return "", fmt.Errorf("sandbox %q: incomplete spec (need ID, Dir, Template.RootFS, Net)", s.ID)
	}
	for _, sub := range []string{overlayDir, hostSocketDir} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o700); err != nil {
			return "", fmt.Errorf("sandbox %s: %w", s.ID, err)
		}
	}
	if err := d.mountHostDirs(s); err != nil {
		return "", fmt.Errorf("sandbox %s: %w", s.ID, err)
	}
	return writeBundle(s, d.cfg.CgroupParent)
}

// Create implements runtime.Driver.
func (d *Driver) Create(ctx context.Context, s runtime.Spec) (err error) {
	start := time.Now()
	bundle, err := d.prepareDir(s)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.cleanupFailed(s)
		}
	}()
	mode := "cold"
	// A template with a start command is always restored from its start snapshot: that is
	// where its server runs.
	if d.cfg.CreateMode == CreateRestore || s.Template.StartCmd != "" {
		mode = "restore"
		img, booted, err := d.templateSnapshot(ctx, s, bundle)
		if err != nil {
			return fmt.Errorf("create %s: %w", s.ID, err)
		}
		if booted {
			mode = "cold+template-checkpoint"
		} else if err := d.restore(ctx, s, bundle, img); err != nil {
			return fmt.Errorf("create %s: %w", s.ID, err)
		}
	} else if err := d.boot(ctx, s, bundle); err != nil {
		return fmt.Errorf("create %s: %w", s.ID, err)
	}
	d.log.Debug("created", "id", s.ID, "mode", mode, "took", time.Since(start))
	return nil
}

// boot cold-starts the sandbox from its bundle and waits for envd.
func (d *Driver) boot(ctx context.Context, s runtime.Spec, bundle string) error {
	if err := d.runsc.spawn(ctx, s, "create", "--bundle", bundle, containerID(s.ID)); err != nil {
		return err
	}
	if err := d.runsc.spawn(ctx, s, "start", containerID(s.ID)); err != nil {
		return err
	}
	return d.waitEnvd(ctx, s)
}

// restore starts the sandbox from checkpoint image dir img and waits for envd.
func (d *Driver) restore(ctx context.Context, s runtime.Spec, bundle, img string) error {
	if err := d.runsc.spawn(ctx, s, "restore", "--image-path", img, "--direct", "--bundle", bundle, "--detach", containerID(s.ID)); err != nil {
		return err
	}
	if err := d.waitEnvd(ctx, s); err != nil {
		return err
	}
	d.thawEnvd(ctx, s)
	return nil
}

// waitEnvd waits for envd's /health; on failure the error carries runsc's and envd's logs.
func (d *Driver) waitEnvd(ctx context.Context, s runtime.Spec) error {
	if err := runtime.WaitEnvd(ctx, s.EnvdAddr(), nil); err != nil {
		return fmt.Errorf("%w; runsc.log: %s; stdio.log: %s", err,
			runtime.LogTail(filepath.Join(s.Dir, runscLog), -1, 8), runtime.LogTail(filepath.Join(s.Dir, stdioLog), -1, 8))
	}
	return nil
}

// cleanupFailed removes what a failed Create or Resume started, leaving s.Dir in place for
// the caller's Destroy (and for the logs in it).
func (d *Driver) cleanupFailed(s runtime.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		d.log.Warn("cleanup after failure", "id", s.ID, "err", err)
	}
	if err := cgroups.Remove(ctx, cgroupPath(d.cfg.CgroupParent, s.ID)); err != nil {
		d.log.Warn("cleanup after failure", "id", s.ID, "err", err)
	}
}

// Pause implements runtime.Driver: `runsc checkpoint` into <dir>/snapshot.tmp, renamed to
// <dir>/snapshot once complete, then the stopped container is deleted.
func (d *Driver) Pause(ctx context.Context, s runtime.Spec) error {
	final := filepath.Join(s.Dir, snapshotDir)
	// Checkpointing needs memory beyond what the sandbox uses; under its own limit a sandbox
	// near that limit would be killed by the checkpoint meant to save it.
	if s.MemoryMiB > 0 {
		if err := d.writeMemoryLimit(s, transientMemoryMiB(s)); err != nil {
			return fmt.Errorf("pause %s: raise memory limit for the checkpoint: %w", s.ID, err)
		}
	}
	if err := d.freezeEnvd(ctx, s); err != nil {
		d.restoreMemoryLimit(s)
		d.thawEnvd(context.WithoutCancel(ctx), s)
		return fmt.Errorf("pause %s: %w", s.ID, err)
	}
	if err := d.checkpoint(ctx, s, final, false); err != nil {
		d.restoreMemoryLimit(s)
		d.thawEnvd(context.WithoutCancel(ctx), s)
		return fmt.Errorf("pause %s: %w", s.ID, err)
	}
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("pause %s: release: %w", s.ID, err)
	}
	if err := cgroups.Remove(ctx, cgroupPath(d.cfg.CgroupParent, s.ID)); err != nil {
		return fmt.Errorf("pause %s: release: %w", s.ID, err)
	}
	return nil
}

// checkpoint writes a checkpoint of s into final atomically (temp dir, then rename).
// With leaveRunning the sandbox keeps running afterwards.
func (d *Driver) checkpoint(ctx context.Context, s runtime.Spec, final string, leaveRunning bool) error {
	tmp := final + tmpSuffix
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	args := []string{"checkpoint", "--image-path", tmp}
	if leaveRunning {
		args = append(args, "--leave-running")
	}
	if _, err := d.runsc.output(ctx, s, append(args, containerID(s.ID))...); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("checkpoint %s: %w", s.ID, err)
	}
	// Fsynced before the rename: a complete snapshot dir must hold complete files after a
	// crash of the machine too.
	if err := durable.ReplaceDir(tmp, final); err != nil {
		return fmt.Errorf("checkpoint %s: %w", s.ID, err)
	}
	return nil
}

// Resume implements runtime.Driver.
func (d *Driver) Resume(ctx context.Context, s runtime.Spec) (err error) {
	img := filepath.Join(s.Dir, snapshotDir)
	if _, err := os.Stat(filepath.Join(img, "checkpoint.img")); err != nil {
		return fmt.Errorf("resume %s: no snapshot: %w", s.ID, err)
	}
	// runsc restore holds the image's pages twice for a moment while it loads them, so a
	// sandbox using most of its memory would be killed by its own limit on the way back. It
	// restores under a raised limit, and the sandbox's own limit is put back right after.
	rs := s
	if s.MemoryMiB > 0 {
		rs.MemoryMiB = transientMemoryMiB(s)
	}
	bundle, err := d.prepareDir(rs)
	if err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	// A container record left by an interrupted earlier attempt would make restore fail.
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	if err := d.restore(ctx, s, bundle, img); err != nil {
		d.cleanupFailed(s)
		return fmt.Errorf("resume %s: %w", s.ID, err)
	}
	d.restoreMemoryLimit(s)
	// The restored sandbox has loaded every page; the snapshot is stale from now on and the
	// next Pause writes a new one.
	if err := os.RemoveAll(img); err != nil {
		d.log.Warn("remove used snapshot", "id", s.ID, "err", err)
	}
	return nil
}

// Destroy implements runtime.Driver.
func (d *Driver) Destroy(ctx context.Context, s runtime.Spec) error {
	if err := d.runsc.stopAndDelete(ctx, containerID(s.ID)); err != nil {
		return fmt.Errorf("destroy %s: %w", s.ID, err)
	}
	if err := cgroups.Remove(ctx, cgroupPath(d.cfg.CgroupParent, s.ID)); err != nil {
		return fmt.Errorf("destroy %s: %w", s.ID, err)
	}
	if s.Dir != "" {
		if err := unmountHostDirs(s); err != nil {
			return fmt.Errorf("destroy %s: %w", s.ID, err)
		}
		if err := os.RemoveAll(s.Dir); err != nil {
			return fmt.Errorf("destroy %s: %w", s.ID, err)
		}
	}
	return nil
}

// transientMemoryMiB is the memory limit while runsc checkpoints or restores a sandbox:
// twice its own limit plus headroom for runsc itself.
func transientMemoryMiB(s runtime.Spec) int { return 2*s.MemoryMiB + 256 }

// limitRestoreWindow is how long the sandbox's own memory limit is retried after a checkpoint
// or restore.
const limitRestoreWindow = time.Minute

// restoreMemoryLimit puts the sandbox's own memory limit back in the background: the extra
// memory of a checkpoint or restore drains over the next seconds, and the caller should not
// wait for it. If the sandbox keeps using more than its limit, the raised limit stays and a
// warning says so.
func (d *Driver) restoreMemoryLimit(s runtime.Spec) {
	if s.MemoryMiB <= 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), limitRestoreWindow)
		defer cancel()
		for {
			err := d.writeMemoryLimit(s, s.MemoryMiB)
			if err == nil || errors.Is(err, os.ErrNotExist) { // gone: destroyed or paused again
				return
			}
			select {
			case <-ctx.Done():
				d.log.Warn("memory limit stays raised: the sandbox uses more than its limit", "id", s.ID, "limit_mib", s.MemoryMiB, "err", err)
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
}

// writeMemoryLimit sets the sandbox's memory cgroup limit. Lowering it below what the
// sandbox uses makes the kernel reclaim cache first, and fails with EBUSY if that is not
// enough.
func (d *Driver) writeMemoryLimit(s runtime.Spec, mib int) error {
	path := filepath.Join(cgroups.V1Root, "memory", cgroupPath(d.cfg.CgroupParent, s.ID), "memory.limit_in_bytes")
	return os.WriteFile(path, []byte(strconv.FormatInt(int64(mib)<<20, 10)), 0)
}
