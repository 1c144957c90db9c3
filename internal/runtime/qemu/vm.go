package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hearthsh/hearth/internal/durable"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/procs"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

// vmConf is how a VM was started; a restore must start QEMU with the same machine.
type vmConf struct {
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	Cmdline   string `json:"cmdline"`
	Accel     string `json:"accel"`
	// Image is the overlay's backing file (the template image).
	Image string `json:"image"`
}

// vmProc is a QEMU process this driver started; done closes once it has been reaped.
type vmProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// pidFile is the VM's pid file; its path in QEMU's command line (-pidfile) marks the process
// as this agent's.
func (d *Driver) pidFile(id string) string { return filepath.Join(runDir(d.cfg.DataDir), id+".pid") }

// qemuArgs builds QEMU's command line. incoming, when set, makes QEMU wait for a migration
// stream (restore) instead of booting.
func (d *Driver) qemuArgs(s runtime.Spec, c vmConf, incoming bool) []string {
	mem := strconv.Itoa(c.MemoryMiB) + "M"
	accel := "tcg,tb-size=64" // the TCG default (1 GiB of translation cache) dwarfs small guests
	if c.Accel == AccelKVM {
		accel = "kvm"
	}
	args := []string{
		"-name", "hearth-" + s.ID,
		"-pidfile", d.pidFile(s.ID),
		"-machine", "microvm,pit=on,pic=on,rtc=on,memory-backend=mem",
		"-accel", accel,
		"-smp", strconv.Itoa(c.CPUs),
		"-m", mem,
		// Guest RAM is a file in the sandbox dir, mapped shared: with x-ignore-shared a
		// snapshot writes only device state, and the file is the memory snapshot.
		"-object", "memory-backend-file,id=mem,size=" + mem + ",mem-path=" + filepath.Join(s.Dir, memFile) + ",share=on",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-chardev", "file,id=con,append=on,path=" + filepath.Join(s.Dir, consoleLog),
		"-serial", "chardev:con",
		"-qmp", "unix:" + filepath.Join(s.Dir, qmpSock) + ",server=on,wait=off",
		"-kernel", c.Kernel, "-initrd", c.Initrd, "-append", c.Cmdline,
		"-drive", "file=" + filepath.Join(s.Dir, diskFile) + ",if=none,id=root,format=qcow2,discard=unmap",
		"-device", "virtio-blk-device,drive=root",
		"-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac=" + microvm.GuestMAC,
		// free-page-reporting hands pages the guest frees back to the host as it runs;
		// deflate-on-oom lets a guest under pressure take ballooned pages back.
		"-device", "virtio-balloon-device,id=balloon0,deflate-on-oom=on,free-page-reporting=on",
	}
	if incoming {
		args = append(args, "-incoming", "defer")
	}
	return args
}

// launch starts QEMU for s inside the slot's netns and returns once its QMP socket answers.
// The process is this driver's child and is reaped by a goroutine; it outlives ctx.
func (d *Driver) launch(ctx context.Context, s runtime.Spec, c vmConf, incomingState string) (*vmProc, error) {
	if len(filepath.Join(s.Dir, qmpSock)) > 107 {
		return nil, fmt.Errorf("sandbox dir %s too long for a unix socket path", s.Dir)
	}
	if err := d.stopVM(s); err != nil { // an earlier attempt's VM must not hold the TAP
		return nil, err
	}
	_ = os.Remove(filepath.Join(s.Dir, qmpSock))
	logf, err := os.OpenFile(filepath.Join(s.Dir, qemuLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// nsenter execs QEMU in the slot's network namespace, so tap0 is found there and the
	// pid is QEMU's own. (ip netns exec would also remount /sys, which QEMU does not need.)
	args := append([]string{"--net=" + s.Net.NetNS, "--", d.cfg.QEMU}, d.qemuArgs(s, c, incomingState != "")...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a terminal's Ctrl-C to the agent must not reach VMs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	p := &vmProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs[s.ID] = p
	d.mu.Unlock()
	q, err := d.waitQMP(ctx, s, p)
	if err != nil {
		return p, err
	}
	q.close()
	return p, nil
}

// waitQMP dials the VM's QMP socket until it answers, the process exits or ctx ends.
func (d *Driver) waitQMP(ctx context.Context, s runtime.Spec, p *vmProc) (*qmp, error) {
	sock := filepath.Join(s.Dir, qmpSock)
	for {
		q, err := dialQMP(ctx, sock)
		if err == nil {
			return q, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("qemu exited at start (%v); %s", p.cmd.ProcessState, vmLogs(s.Dir))
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu QMP socket: %w (last: %v); %s", ctx.Err(), err, vmLogs(s.Dir))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// qmpFor dials the QMP socket of the running VM of s.
func (d *Driver) qmpFor(ctx context.Context, s runtime.Spec) (*qmp, error) {
	return dialQMP(ctx, filepath.Join(s.Dir, qmpSock))
}

// proc returns the running VM process of id started by this driver, if any.
func (d *Driver) proc(id string) *vmProc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.procs[id]
}

// stopVM kills the VM of s and waits until it is reaped: this driver's child through its
// Wait goroutine, a VM of an earlier agent run (found by its pid file and command-line
// marker) by polling. A VM that is not running is not an error.
func (d *Driver) stopVM(s runtime.Spec) error {
	d.mu.Lock()
	p := d.procs[s.ID]
	delete(d.procs, s.ID)
	d.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("qemu pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
		}
	}
	pf := d.pidFile(s.ID)
	if pids := procs.Find(func(a []string) bool { return procs.HasArg(a, "-pidfile", pf) }); len(pids) > 0 {
		if !procs.KillAndWait(pids, 10*time.Second) {
			return fmt.Errorf("qemu processes %v did not exit after SIGKILL", pids)
		}
	}
	if err := os.Remove(pf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if s.Dir != "" {
		_ = os.Remove(filepath.Join(s.Dir, qmpSock))
	}
	return nil
}

// quitVM asks QEMU to exit and waits for it to be reaped, killing it after a grace period.
func (d *Driver) quitVM(ctx context.Context, s runtime.Spec, q *qmp) error {
	p := d.proc(s.ID)
	if err := q.exec(ctx, "quit", nil, nil); err != nil {
		d.log.Warn("qmp quit", "id", s.ID, "err", err)
	}
	if p != nil {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	return d.stopVM(s)
}

// runCmd runs a short command and returns its stdout; errors carry its stderr.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(path, b, 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
