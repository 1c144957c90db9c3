package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/kvmcheck"
)

// doctorFacts is what `hearth doctor` finds out about the host. Gathering them touches the
// kernel; judging them (buildReport) does not, so the judgement is tested on made-up facts.
type doctorFacts struct {
	Root           bool            `json:"root"`
	Runsc          binaryFact      `json:"runsc"`
	CgroupVersion  int             `json:"cgroup_version"` // 2, 1, or 0 when none is mounted
	QEMU           binaryFact      `json:"qemu"`
	KVM            kvmcheck.Result `json:"kvm"`
	Firecracker    binaryFact      `json:"firecracker"`
	FCKernel       binaryFact      `json:"firecracker_kernel"`
	Userfaultfd    checkResult     `json:"userfaultfd"`
	Netns          checkResult     `json:"netns"`
	Nftables       checkResult     `json:"nftables"`
	DefaultRuntime string          `json:"default_runtime"`
}

// binaryFact is a file the runtime needs: where it is, its version, or why it is missing.
type binaryFact struct {
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
	Err     string `json:"error,omitempty"`
}

// checkResult is one host capability.
type checkResult struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// runtimeReport says whether one runtime can run here.
type runtimeReport struct {
	Name     string   `json:"name"`
	Default  bool     `json:"default"`
	Usable   bool     `json:"usable"`
	Notes    []string `json:"notes,omitempty"`    // what it will use
	Problems []string `json:"problems,omitempty"` // why it cannot run
}

// doctorReport is the output of `hearth doctor`.
type doctorReport struct {
	Runtimes  []runtimeReport        `json:"runtimes"`
	Host      map[string]checkResult `json:"host"`
	DefaultOK bool                   `json:"default_ok"`
}

// buildReport judges the facts: for each runtime, whether it can run and why not.
func buildReport(f doctorFacts) doctorReport {
	var common []string
	if !f.Root {
		common = append(common, "the agent must run as root (netns, TAP, cgroups)")
	}
	if !f.Netns.OK {
		common = append(common, "network namespaces: "+f.Netns.Detail)
	}
	if !f.Nftables.OK {
		common = append(common, "nftables: "+f.Nftables.Detail)
	}

	gv := runtimeReport{Name: "gvisor", Problems: append([]string(nil), common...)}
	if f.Runsc.Err != "" {
		gv.Problems = append(gv.Problems, "runsc: "+f.Runsc.Err)
	} else {
		gv.Notes = append(gv.Notes, fmt.Sprintf("runsc %s (%s), systrap platform", f.Runsc.Version, f.Runsc.Path))
	}
	if f.CgroupVersion == 0 {
		gv.Problems = append(gv.Problems, "no cgroup hierarchy mounted at /sys/fs/cgroup")
	} else {
		gv.Notes = append(gv.Notes, fmt.Sprintf("cgroup v%d", f.CgroupVersion))
	}

	qm := runtimeReport{Name: "qemu", Problems: append([]string(nil), common...)}
	if f.QEMU.Err != "" {
		qm.Problems = append(qm.Problems, "qemu-system-x86_64: "+f.QEMU.Err)
	} else {
		qm.Notes = append(qm.Notes, "qemu-system-x86_64 at "+f.QEMU.Path)
	}
	if f.KVM.Usable {
		qm.Notes = append(qm.Notes, "KVM acceleration")
	} else {
		qm.Notes = append(qm.Notes, "TCG (software emulation, boots in seconds) will be used: KVM not usable: "+f.KVM.Reason)
	}

	fc := runtimeReport{Name: "firecracker", Problems: append([]string(nil), common...)}
	if !f.KVM.Usable {
		fc.Problems = append(fc.Problems, "KVM not usable: "+f.KVM.Reason)
	}
	if f.Firecracker.Err != "" {
		fc.Problems = append(fc.Problems, "firecracker binary: "+f.Firecracker.Err)
	} else {
		fc.Notes = append(fc.Notes, fmt.Sprintf("firecracker %s (%s)", f.Firecracker.Version, f.Firecracker.Path))
	}
	if f.FCKernel.Err != "" {
		fc.Problems = append(fc.Problems, "guest kernel: "+f.FCKernel.Err)
	} else {
		fc.Notes = append(fc.Notes, "guest kernel "+f.FCKernel.Path)
	}
	if !f.Userfaultfd.OK {
		fc.Problems = append(fc.Problems, "userfaultfd (resume): "+f.Userfaultfd.Detail)
	}

	r := doctorReport{Host: map[string]checkResult{
		"userfaultfd": f.Userfaultfd, "netns": f.Netns, "nftables": f.Nftables,
		"kvm": {OK: f.KVM.Usable, Detail: kvmDetail(f.KVM)},
	}}
	for _, rt := range []runtimeReport{gv, qm, fc} {
		rt.Usable = len(rt.Problems) == 0
		rt.Default = rt.Name == f.DefaultRuntime
		if rt.Default {
			r.DefaultOK = rt.Usable
		}
		r.Runtimes = append(r.Runtimes, rt)
	}
	return r
}

func kvmDetail(k kvmcheck.Result) string {
	if k.Usable {
		return fmt.Sprintf("a vCPU ran the test program in %v", k.LoopTime.Round(time.Microsecond))
	}
	return k.Reason
}

// writeText prints the report for people.
func (r doctorReport) writeText(w io.Writer) {
	for _, rt := range r.Runtimes {
		mark, def := "no ", ""
		if rt.Usable {
			mark = "yes"
		}
		if rt.Default {
			def = " (default)"
		}
		fmt.Fprintf(w, "%-12s %s%s\n", rt.Name, mark, def)
		for _, n := range rt.Notes {
			fmt.Fprintf(w, "    uses: %s\n", n)
		}
		for _, p := range rt.Problems {
			fmt.Fprintf(w, "    cannot run: %s\n", p)
		}
	}
	fmt.Fprintln(w, "host:")
	for _, k := range []string{"kvm", "userfaultfd", "netns", "nftables"} {
		c := r.Host[k]
		mark := "no "
		if c.OK {
			mark = "yes"
		}
		fmt.Fprintf(w, "    %-12s %s  %s\n", k, mark, c.Detail)
	}
}

// doctorOpts are the locations doctor checks, as the agent's flags would give them.
type doctorOpts struct {
	Runtime, Runsc, Firecracker, FCKernel string
}

// gatherFacts runs the real checks.
func gatherFacts(ctx context.Context, o doctorOpts) doctorFacts {
	f := doctorFacts{Root: os.Geteuid() == 0, DefaultRuntime: o.Runtime}
	if bin, err := findRunsc(o.Runsc); err != nil {
		f.Runsc.Err = err.Error()
	} else {
		f.Runsc = versionOf(ctx, bin, "--version")
	}
	switch {
	case exists("/sys/fs/cgroup/cgroup.controllers"):
		f.CgroupVersion = 2
	case exists("/sys/fs/cgroup/memory") || exists("/sys/fs/cgroup/cpu"):
		f.CgroupVersion = 1
	}
	if p, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		f.QEMU.Err = "not found on PATH (apt-get install qemu-system-x86)"
	} else {
		f.QEMU = binaryFact{Path: p}
	}
	f.KVM = kvmcheck.Probe()
	fcBin := o.Firecracker
	if fcBin == "" {
		fcBin = findBinary("firecracker")
	}
	if _, err := os.Stat(fcBin); err != nil {
		f.Firecracker.Err = fmt.Sprintf("%s not found (pass --firecracker)", fcBin)
	} else {
		f.Firecracker = versionOf(ctx, fcBin, "--version")
	}
	if o.FCKernel == "" {
		f.FCKernel.Err = "none given (pass --fc-kernel, an uncompressed vmlinux)"
	} else if _, err := os.Stat(o.FCKernel); err != nil {
		f.FCKernel.Err = err.Error()
	} else {
		f.FCKernel.Path = o.FCKernel
	}
	f.Userfaultfd = checkUserfaultfd()
	f.Netns = checkNetns(ctx)
	f.Nftables = checkNftables()
	return f
}

// versionOf runs bin with arg and keeps the first line of its output as the version.
func versionOf(ctx context.Context, bin, arg string) binaryFact {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	if err != nil {
		return binaryFact{Path: bin, Err: fmt.Sprintf("%s %s: %v", bin, arg, err)}
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return binaryFact{Path: bin, Version: line}
}

// checkUserfaultfd creates a userfaultfd and negotiates the API with the remove event
// Firecracker's Uffd backend requires, through the syscall or /dev/userfaultfd.
func checkUserfaultfd() checkResult {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	via := "userfaultfd(2)"
	if errno != 0 {
		dev, err := os.OpenFile("/dev/userfaultfd", os.O_RDWR, 0)
		if err != nil {
			return checkResult{Detail: fmt.Sprintf("userfaultfd(2): %v; /dev/userfaultfd: %v", errno, err)}
		}
		defer dev.Close()
		r, _, e := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), 0xAA00 /* USERFAULTFD_IOC_NEW */, unix.O_CLOEXEC|unix.O_NONBLOCK)
		if e != 0 {
			return checkResult{Detail: fmt.Sprintf("USERFAULTFD_IOC_NEW: %v", e)}
		}
		fd, via = r, "/dev/userfaultfd"
	}
	defer unix.Close(int(fd))
	api := [3]uint64{0xAA, 1 << 3 /* UFFD_FEATURE_EVENT_REMOVE */, 0}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, 0xC018AA3F /* UFFDIO_API */, uintptr(unsafe.Pointer(&api[0]))); e != 0 {
		return checkResult{Detail: fmt.Sprintf("UFFDIO_API with EVENT_REMOVE via %s: %v", via, e)}
	}
	return checkResult{OK: true, Detail: "via " + via + ", with EVENT_REMOVE"}
}

// checkNetns creates a throwaway network namespace in a child process.
func checkNetns(ctx context.Context) checkResult {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "unshare", "--net", "true").CombinedOutput(); err != nil {
		return checkResult{Detail: fmt.Sprintf("unshare --net: %v %s", err, strings.TrimSpace(string(out)))}
	}
	return checkResult{OK: true, Detail: "a new network namespace could be created"}
}

// checkNftables lists the host's nftables tables over netlink (read only).
func checkNftables() checkResult {
	c, err := nftables.New()
	if err != nil {
		return checkResult{Detail: err.Error()}
	}
	tables, err := c.ListTables()
	if err != nil {
		return checkResult{Detail: "list tables: " + err.Error()}
	}
	return checkResult{OK: true, Detail: fmt.Sprintf("netlink answers (%d tables)", len(tables))}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func init() {
	var (
		o      doctorOpts
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Say which sandbox runtimes this host can run, and why not",
		Long: "Checks, by trying them, what each runtime needs: runsc and cgroups for gvisor; " +
			"qemu-system-x86_64 and whether KVM really runs a vCPU (else TCG) for qemu; a usable " +
			"KVM, the firecracker binary and a guest kernel for firecracker; plus userfaultfd, " +
			"network namespaces and nftables. Exits non-zero when the --runtime the agent would " +
			"use cannot run here.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r := buildReport(gatherFacts(cmd.Context(), o))
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				r.writeText(cmd.OutOrStdout())
			}
			if !r.DefaultOK {
				return errors.New("runtime " + o.Runtime + " cannot run on this host")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Runtime, "runtime", "gvisor", "the runtime the agent will use; doctor fails when it cannot run")
	f.StringVar(&o.Runsc, "runsc", "", "runsc binary (default: bin/runsc next to hearth, else PATH)")
	f.StringVar(&o.Firecracker, "firecracker", "", "firecracker binary (default: next to hearth, else PATH)")
	f.StringVar(&o.FCKernel, "fc-kernel", os.Getenv("HEARTH_FC_KERNEL"), "firecracker guest kernel ($HEARTH_FC_KERNEL)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	rootCmd.AddCommand(cmd)
}
