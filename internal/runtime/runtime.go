// Package runtime defines the contract between the sandbox manager and the drivers that run
// sandboxes (gvisor, qemu, firecracker). The manager holds the state machine and never
// branches on a driver's kind; a driver holds no state the manager depends on beyond what
// lives under a sandbox's own data directory, so an agent restart only has to Reclaim.
package runtime

import (
	"context"
	"net/netip"
)

// EnvdPort is the TCP port envd listens on inside every sandbox.
const EnvdPort = 49983

// Template is what a driver needs to know about a built template.
type Template struct {
	// Name is the template's name, e.g. "base".
	Name string
	// RootFS is the root filesystem directory (gVisor boots it directly; VM drivers derive
	// their ext4 image from it). Drivers never write to it.
	RootFS string
	// Version changes whenever the rootfs or the injected envd changes. Drivers key any
	// cached boot snapshot of the template on it, so a stale snapshot is never restored.
	Version string
	// DiskMiB is the disk size the template asks for its sandboxes (0: the agent's default).
	// Drivers use Spec.DiskMiB, which the agent fills from it.
	DiskMiB int
	// StartCmd, when set, is started in the sandbox booted for the template snapshot, and
	// ReadyCmd polled until it succeeds, before the checkpoint (StartSnapshotDriver); User,
	// Workdir and Env are what both run with. Set by API builds.
	StartCmd, ReadyCmd string
	User, Workdir      string
	Env                map[string]string
}

// Net is the sandbox's network slot, prepared by the caller (internal/netslot).
type Net struct {
	// NetNS is the path of the slot's network namespace, e.g. /run/netns/hearth-7.
	NetNS string
	// GuestIP is the address the guest owns inside the slot; the host reaches envd there.
	GuestIP netip.Addr
}

// Spec describes one sandbox. The same Spec is passed to every call for that sandbox.
type Spec struct {
	// ID names the sandbox; unique on the agent, usable as a file and container name.
	ID string
	// Dir is the sandbox's data directory, owned by the driver: bundle, logs and snapshots
	// live here, and Destroy removes it.
	Dir      string
	Template Template
	Net      Net
	// CPUs and MemoryMiB are hard limits for the whole sandbox (runtime overhead included).
	CPUs      int
	MemoryMiB int
	// DiskMiB bounds what the sandbox can write to its root filesystem: writes past it fail
	// with ENOSPC inside the sandbox. 0 means unbounded (records from before disk limits).
	DiskMiB int
	// EnvdSecret is the credential of envd's internal routes (/init, /freeze, /thaw) in this
	// sandbox, generated and kept by the agent; drivers that call /freeze or /thaw present it
	// in auth.AgentHeader. envd holds none until the agent's first /init after a boot.
	EnvdSecret string
}

// EnvdAddr is where the host reaches envd of the sandbox described by s.
func (s Spec) EnvdAddr() netip.AddrPort { return netip.AddrPortFrom(s.Net.GuestIP, EnvdPort) }

// Driver runs sandboxes of one kind. Every method takes a ctx whose deadline bounds the
// whole operation; methods are safe to call concurrently for different sandboxes.
type Driver interface {
	// Create boots a new sandbox from s.Template in s.Net and returns once envd answers
	// GET /health at s.EnvdAddr(). On error nothing of the sandbox is left running.
	Create(ctx context.Context, s Spec) error
	// Pause snapshots the running sandbox into s.Dir (written to a temp dir, then renamed,
	// so a snapshot is either complete or absent) and releases its processes and cgroups.
	// On error the sandbox is still running, as before the call.
	Pause(ctx context.Context, s Spec) error
	// Resume restores a paused sandbox from its snapshot in s.Dir and returns once envd
	// answers. The caller has re-added the slot's addresses to s.Net.NetNS beforehand
	// (gVisor's netstack strips them when it takes the interface over). On error the
	// snapshot is kept and nothing is left running.
	Resume(ctx context.Context, s Spec) error
	// Destroy stops the sandbox in whatever state it is (running, paused, half-created,
	// already gone) and removes its processes, cgroups and s.Dir. Idempotent.
	Destroy(ctx context.Context, s Spec) error
	// Reclaim removes everything a previous run of this agent left behind for this driver:
	// runtime processes, containers, cgroups and mounts. Call it once at agent start,
	// before the first Create. Paused sandboxes' snapshots are data and are kept.
	Reclaim(ctx context.Context) error
}

// EnvdSocketDriver is implemented by drivers whose sandboxes also serve envd on a host Unix
// socket. The agent sends envd's traffic (port EnvdPort) there instead of to the sandbox's
// address, so commands and terminals do not depend on the sandbox's network stack, which its
// workload shares and can reconfigure.
type EnvdSocketDriver interface {
	// EnvdSocket is the host path of the socket of sandbox s while it runs. It may be
	// briefly absent (around a pause): callers fall back to s.EnvdAddr(). The sandbox
	// writes its directory, so callers dial it only through internal/confine.
	EnvdSocket(s Spec) string
}

// TAPDriver is implemented by drivers whose sandboxes attach to a TAP device in the slot's
// network namespace (microVMs). The agent acquires slots with netslot.WithTAP when
// NeedsTAP reports true; it never asks which kind of driver it has.
// PauseRecoverer is a Driver that can finish, after the agent restarts, a pause or resume
// the previous agent was killed in the middle of.
type PauseRecoverer interface {
	// RecoverPause leaves sandbox s paused with a complete snapshot in s.Dir: it keeps a
	// snapshot that is complete, completes one the runtime finished writing, or snapshots
	// the sandbox if it still runs (reaching envd at s.Net, which is still in place). It is
	// called before Reclaim. On error there is no snapshot and nothing of s runs.
	RecoverPause(ctx context.Context, s Spec) error
}

type TAPDriver interface {
	NeedsTAP() bool
}

// ForkDriver is implemented by drivers that can copy a running sandbox. The agent refuses
// forks on drivers without it; it never asks which kind of driver it has.
type ForkDriver interface {
	// Fork snapshots the running sandbox parent without stopping it (its clients only see a
	// pause) and starts each of children from that snapshot: the parent's files, memory and
	// processes, in the child's own Dir and Net. It returns one error per child (nil for
	// those that run and answer at their envd); a failed child leaves nothing running. An
	// error of its own means no child was started and the parent runs as before.
	Fork(ctx context.Context, parent Spec, children []Spec) ([]error, error)
}

// SnapshotDriver is implemented by drivers that can keep a copy of a running sandbox apart
// from it, to start new sandboxes from later (E2B's snapshots). The agent refuses snapshots
// on drivers without it; it never asks which kind of driver it has.
type SnapshotDriver interface {
	// Snapshot writes the running sandbox s (its files, memory and processes) into dir,
	// which must not exist: written to a temporary dir and renamed, so dir is complete or
	// absent. s keeps running (its clients only see a pause). Nothing in dir refers to s.Dir.
	Snapshot(ctx context.Context, s Spec, dir string) error
	// StartFromSnapshot starts s from a snapshot dir written by Snapshot of a sandbox of the
	// same template and disk size, and returns once envd answers. envd then holds the
	// source's token and sourceSecret until the caller's /init. The new sandbox loads what
	// it needs from dir while starting and never reads dir again: dir can be removed while
	// it runs. On error nothing of s is left running.
	StartFromSnapshot(ctx context.Context, s Spec, dir, sourceSecret string) error
}

// FilesystemPauser is implemented by drivers that can pause a sandbox keeping only its
// disk: the memory is dropped and resuming boots the sandbox afresh on the saved
// filesystem (a new kernel boot, no processes). The agent refuses such pauses on drivers
// without it.
type FilesystemPauser interface {
	// PauseFilesystem saves the root filesystem of the running sandbox s into s.Dir
	// (complete or absent) and releases its processes and cgroups. On error the sandbox is
	// still running.
	PauseFilesystem(ctx context.Context, s Spec) error
	// ResumeFilesystem boots s on the filesystem PauseFilesystem saved and returns once envd
	// answers; envd holds no token or secret yet. On error the saved filesystem is kept and
	// nothing is left running.
	ResumeFilesystem(ctx context.Context, s Spec) error
	// HasFilesystemSnapshot reports whether s.Dir holds a complete saved filesystem, for an
	// agent finishing a pause its predecessor was killed in.
	HasFilesystemSnapshot(s Spec) bool
}

// PortablePauser is a driver whose paused sandbox is wholly in a few directories of its
// Spec.Dir, together with the template it was booted from: another host with the same
// template build that is given copies of them resumes the sandbox there, in another network
// slot. The agent copies them through its artifacts store.
type PortablePauser interface {
	// PausedDirs are the directories, relative to Spec.Dir, that hold a paused sandbox's
	// state after Pause (or PauseFilesystem when filesystemOnly).
	PausedDirs(filesystemOnly bool) []string
}

// AdoptableDriver is implemented by drivers whose sandboxes can be started ahead of need and
// handed over to a sandbox ID chosen later (the agent's warm pool): a running sandbox keeps
// working when its Spec.Dir is renamed, every later call for it passing the new Dir and the
// ID it was created with, and a paused one resumes under any ID. The agent keeps no warm
// pool on drivers without it; it never asks which kind of driver it has.
type AdoptableDriver interface {
	Adoptable() bool
}
