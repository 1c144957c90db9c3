package firecracker

import (
	"fmt"
	"os"
	"strconv"

	"github.com/hearthsh/hearth/internal/runtime"
)

// cpuPeriodUs is the CFS period the CPU limit is expressed in.
const cpuPeriodUs = 100_000

// vmmOverheadMiB is what Spec.MemoryMiB keeps for Firecracker itself (its own RSS is under
// 5 MiB; the rest is headroom for the API thread and the balloon's bookkeeping), so that
// guest memory plus VMM fit the sandbox's hard memory limit.
const vmmOverheadMiB = 32

// minGuestMiB is the smallest guest Hearth boots: a Linux guest with envd needs about this.
const minGuestMiB = 128

// guestMemMiB is the guest's memory size for spec s.
func guestMemMiB(s runtime.Spec) int {
	return max(s.MemoryMiB-vmmOverheadMiB, minGuestMiB)
}

// vcpus is the guest's vCPU count: Firecracker accepts 1..32.
func vcpus(s runtime.Spec) int { return min(max(s.CPUs, 1), 32) }

// cgroupV2 reports whether the unified hierarchy is mounted at /sys/fs/cgroup.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// jailerArgs is the jailer's command line for sandbox s with VM layout l: the jail (id,
// binary, uid/gid, chroot base, netns), the cgroup limits of the sandbox, then after "--"
// Firecracker's own arguments. The jailer passes --id on to Firecracker itself.
func (d *Driver) jailerArgs(s runtime.Spec, l layout, v2 bool) []string {
	args := []string{
		"--id", l.vmID,
		"--exec-file", d.cfg.Firecracker,
		"--uid", strconv.Itoa(d.cfg.UID),
		"--gid", strconv.Itoa(d.cfg.GID),
		"--chroot-base-dir", d.cfg.RunDir,
		"--netns", s.Net.NetNS,
		"--parent-cgroup", d.cfg.CgroupParent,
	}
	memBytes := int64(s.MemoryMiB) << 20
	quota := vcpus(s) * cpuPeriodUs
	if v2 {
		args = append(args, "--cgroup-version", "2",
			"--cgroup", fmt.Sprintf("cpu.max=%d %d", quota, cpuPeriodUs))
		if memBytes > 0 {
			args = append(args, "--cgroup", fmt.Sprintf("memory.max=%d", memBytes))
		}
	} else {
		args = append(args, "--cgroup-version", "1",
			"--cgroup", fmt.Sprintf("cpu.cfs_period_us=%d", cpuPeriodUs),
			"--cgroup", fmt.Sprintf("cpu.cfs_quota_us=%d", quota))
		if memBytes > 0 {
			args = append(args, "--cgroup", fmt.Sprintf("memory.limit_in_bytes=%d", memBytes))
		}
	}
	return append(args, "--", "--api-sock", l.guest(apiSock))
}

// command returns the program and arguments that start sandbox s's Firecracker: the
// jailer, or nsenter into the slot's netns running Firecracker with the same --id.
func (d *Driver) command(s runtime.Spec, l layout) (string, []string) {
	if d.cfg.Jailer != "" {
		return d.cfg.Jailer, d.jailerArgs(s, l, cgroupV2())
	}
	return "nsenter", []string{"--net=" + s.Net.NetNS, "--", d.cfg.Firecracker,
		"--api-sock", l.guest(apiSock), "--id", l.vmID}
}
