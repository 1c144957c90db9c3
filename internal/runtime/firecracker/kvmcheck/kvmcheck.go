// Package kvmcheck proves whether this host can run hardware-virtualised guests, by doing
// what a VMM does: open /dev/kvm, create a VM and a vCPU, and run a tiny real-mode guest
// program to completion. Existence of /dev/kvm is not enough: on hosts that are themselves
// VMs it may be backed by PVM (kvm_pvm), where KVM_CREATE_VM succeeds but ordinary guest
// kernels crawl through the instruction emulator and then fail, so the check runs a
// counted loop and requires it to finish at hardware speed.
package kvmcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result is what the probe found.
type Result struct {
	// Usable: a vCPU ran the test program to completion at hardware speed.
	Usable bool
	// Reason says why not (empty when Usable).
	Reason string
	// DeviceOK: /dev/kvm opened and answered KVM_GET_API_VERSION 12.
	DeviceOK bool
	// CreateVM: KVM_CREATE_VM succeeded.
	CreateVM bool
	// PVM: the kvm_pvm module backs /dev/kvm (only PVM-aware guest kernels run at speed).
	PVM bool
	// LoopTime is how long the vCPU took for the test loop, if it ran.
	LoopTime time.Duration
}

// Device is the KVM device node.
const Device = "/dev/kvm"

// loopIterations and maxLoopTime: real KVM runs the loop in a few milliseconds; an
// emulated vCPU needs orders of magnitude longer. The bound is generous for a loaded host.
const (
	loopIterations = 10_000_000
	maxLoopTime    = 300 * time.Millisecond
	ioPort         = 0x10
	ioValue        = 0x42
)

// ioctl request numbers from linux/kvm.h.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46 // _IOW(0xAE, 0x46, 32 bytes)
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81 // _IOR(0xAE, 0x81, 144 bytes)
	kvmSetRegs             = 0x4090AE82 // _IOW(0xAE, 0x82, 144 bytes)
	kvmGetSregs            = 0x8138AE83 // _IOR(0xAE, 0x83, 312 bytes)
	kvmSetSregs            = 0x4138AE84 // _IOW(0xAE, 0x84, 312 bytes)

	exitIO           = 2
	exitHLT          = 5
	exitInternalErr  = 17
	exitFailEntry    = 9
	guestCodeAddr    = 0x1000
	guestMemSize     = 0x10000
	sregsSize        = 312
	regsSize         = 144
	regsRIPOffset    = 16 * 8 // rax..r15 precede rip
	regsRFLAGSOffset = 17 * 8
)

// program is 16-bit real-mode code: mov ecx, N; l: dec ecx; jnz l; mov al, 0x42;
// out 0x10, al; hlt.
func program() []byte {
	p := []byte{0x66, 0xB9, 0, 0, 0, 0, 0x66, 0x49, 0x75, 0xFC, 0xB0, ioValue, 0xE6, ioPort, 0xF4}
	binary.LittleEndian.PutUint32(p[2:6], loopIterations)
	return p
}

// Probe runs the check. It never panics and leaves nothing open.
func Probe() Result {
	var r Result
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		r.PVM = true
	}
	f, err := os.OpenFile(Device, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		r.Reason = fmt.Sprintf("open %s: %v", Device, err)
		return r
	}
	defer f.Close()
	kvm := int(f.Fd())
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != 12 {
		r.Reason = fmt.Sprintf("KVM_GET_API_VERSION = %d, %v (want 12)", v, err)
		return r
	}
	r.DeviceOK = true
	vmfd, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		r.Reason = fmt.Sprintf("KVM_CREATE_VM: %v", err)
		return r
	}
	defer unix.Close(int(vmfd))
	r.CreateVM = true
	took, err := runGuest(kvm, int(vmfd))
	r.LoopTime = took
	switch {
	case errors.Is(err, errTooSlow):
		r.Reason = fmt.Sprintf("a vCPU did not finish a %d-iteration loop in %v (hardware needs a few ms): guest code is emulated, not virtualised",
			loopIterations, maxLoopTime)
	case err != nil:
		r.Reason = "a vCPU could not run a test program: " + err.Error()
	default:
		r.Usable = true
	}
	if !r.Usable && r.PVM {
		r.Reason += "; /dev/kvm is PVM (kvm_pvm), which runs only PVM guest kernels"
	}
	return r
}

// errTooSlow: the vCPU was interrupted after maxLoopTime without finishing the loop.
var errTooSlow = errors.New("test loop too slow")

// runGuest loads the program into a fresh vCPU and runs it until it halts.
func runGuest(kvm, vmfd int) (time.Duration, error) {
	mem, err := unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return 0, fmt.Errorf("mmap guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem[guestCodeAddr:], program())
	region := struct {
		slot, flags                              uint32
		guestPhysAddr, memorySize, userspaceAddr uint64
	}{memorySize: guestMemSize, userspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctlPtr(vmfd, kvmSetUserMemoryRegion, unsafe.Pointer(&region)); err != nil {
		return 0, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	vcpu, err := ioctl(vmfd, kvmCreateVCPU, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(int(vcpu))
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil || size < 64 {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE = %d: %v", size, err)
	}
	run, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mmap kvm_run: %w", err)
	}
	defer unix.Munmap(run)

	// Real mode at 0:0x1000: segment bases and selectors 0 (what KVM gives CS is F000:FFF0).
	var sregs [sregsSize]byte
	if _, err := ioctlPtr(int(vcpu), kvmGetSregs, unsafe.Pointer(&sregs[0])); err != nil {
		return 0, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	binary.LittleEndian.PutUint64(sregs[0:8], 0)   // cs.base
	binary.LittleEndian.PutUint16(sregs[12:14], 0) // cs.selector
	if _, err := ioctlPtr(int(vcpu), kvmSetSregs, unsafe.Pointer(&sregs[0])); err != nil {
		return 0, fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	var regs [regsSize]byte
	binary.LittleEndian.PutUint64(regs[regsRIPOffset:], guestCodeAddr)
	binary.LittleEndian.PutUint64(regs[regsRFLAGSOffset:], 2)
	if _, err := ioctlPtr(int(vcpu), kvmSetRegs, unsafe.Pointer(&regs[0])); err != nil {
		return 0, fmt.Errorf("KVM_SET_REGS: %w", err)
	}

	// KVM_RUN blocks this thread for as long as the guest runs; after maxLoopTime a signal
	// to the thread makes it return EINTR. SIGURG is the one the Go runtime already
	// handles and ignores (it uses it for preemption).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var timedOut atomic.Bool
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-stop:
			return
		case <-time.After(maxLoopTime):
		}
		timedOut.Store(true)
		for {
			_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	sawIO := false
	for i := 0; i < 16; i++ {
		if _, err := ioctl(int(vcpu), kvmRun, 0); err != nil {
			if errors.Is(err, unix.EINTR) {
				if timedOut.Load() {
					return time.Since(start), errTooSlow
				}
				i--
				continue
			}
			return time.Since(start), fmt.Errorf("KVM_RUN: %w", err)
		}
		reason := binary.LittleEndian.Uint32(run[8:12])
		switch reason {
		case exitIO:
			port := binary.LittleEndian.Uint16(run[34:36])
			off := binary.LittleEndian.Uint64(run[40:48])
			if port != ioPort || off >= uint64(len(run)) || run[off] != ioValue {
				return time.Since(start), fmt.Errorf("unexpected port I/O (port %#x)", port)
			}
			sawIO = true
		case exitHLT:
			if !sawIO {
				return time.Since(start), errors.New("guest halted before finishing its loop")
			}
			return time.Since(start), nil
		case exitInternalErr:
			return time.Since(start), errors.New("KVM internal error (instruction emulation failed)")
		case exitFailEntry:
			return time.Since(start), errors.New("KVM could not enter the guest (hardware entry failure)")
		default:
			return time.Since(start), fmt.Errorf("unexpected KVM exit reason %d", reason)
		}
	}
	return time.Since(start), errors.New("guest did not halt")
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return r, e
	}
	return r, nil
}
