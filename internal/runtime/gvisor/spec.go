package gvisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hearthsh/hearth/internal/runtime"
)

// cpuPeriod is the CFS period the CPU quota is expressed in (100 ms, the kernel default).
const cpuPeriod = 100000

// guestSocketDir is where the sandbox sees its host socket dir (hostSocketDir).
const guestSocketDir = "/run/hearth"

// envdArgs is the sandbox's only process: envd, which starts everything else on request. It
// serves on its TCP port and on a Unix socket in the directory shared with the host.
var envdArgs = []string{"/usr/bin/envd", "--addr", fmt.Sprintf("0.0.0.0:%d", runtime.EnvdPort),
	"--host-socket", guestSocketDir + "/" + envdSocket}

// caps are root's capabilities inside the sandbox: Docker's default set, which envd needs to
// run commands as `user` (SETUID, SETGID) and as a root that can read any file
// (DAC_OVERRIDE), plus PTRACE and NET_ADMIN for debuggers and network tools. They act on
// gVisor's kernel, not the host's.
var caps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN",
}

// ociSpec builds the OCI runtime spec of sandbox s. The network namespace is given by path in
// linux.namespaces, never by running runsc under `ip netns exec`, which remounts /sys and
// breaks runsc's cgroup setup. Spec fields that runsc validates on restore (mounts, process,
// root) are identical for every sandbox of a template, so a checkpoint of one sandbox can be
// restored as another.
func ociSpec(s runtime.Spec, cgroupParent string) *specs.Spec {
	mem := int64(s.MemoryMiB) << 20
	quota := int64(s.CPUs) * cpuPeriod
	period := uint64(cpuPeriod)
	var res specs.LinuxResources
	if s.MemoryMiB > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &mem}
	}
	if s.CPUs > 0 {
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: "hearth",
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: envdArgs,
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HOME=/root",
			},
			Cwd:          "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		// A real directory, not a symlink: runsc's gofer refuses symlinked rootfs paths.
		Root: &specs.Root{Path: s.Template.RootFS, Readonly: false},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			// runsc ignores a bind mount's source when it validates a restore, so this
			// per-sandbox path keeps checkpoints restorable as other sandboxes.
			{Destination: guestSocketDir, Type: "bind", Source: filepath.Join(s.Dir, hostSocketDir), Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: s.Net.NetNS},
			},
			Resources:   &res,
			CgroupsPath: cgroupPath(cgroupParent, s.ID),
		},
	}
}

// cgroupPath is the container's cgroup below every v1 hierarchy: one parent per agent, so
// Reclaim finds every leftover without guessing.
func cgroupPath(parent, id string) string { return "/" + parent + "/" + id }

// writeBundle writes the OCI bundle (config.json) of s under s.Dir.
func writeBundle(s runtime.Spec, cgroupParent string) (string, error) {
	bundle := filepath.Join(s.Dir, bundleDir)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return "", fmt.Errorf("bundle %s: %w", s.ID, err)
	}
	b, err := json.MarshalIndent(ociSpec(s, cgroupParent), "", "  ")
	if err != nil {
		return "", fmt.Errorf("bundle %s: %w", s.ID, err)
	}
	tmp := filepath.Join(bundle, "config.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", fmt.Errorf("bundle %s: %w", s.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(bundle, "config.json")); err != nil {
		return "", fmt.Errorf("bundle %s: %w", s.ID, err)
	}
	return bundle, nil
}
