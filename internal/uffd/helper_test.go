package uffd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Helper processes: the test binary re-executed with helperEnv set plays a client in its
// own process, for the tests where the server must kill its peer (it never kills itself)
// or where the client forks.

const (
	helperEnv       = "HEARTH_UFFD_HELPER"
	helperSocketEnv = "HEARTH_UFFD_SOCKET"
	helperSizeEnv   = "HEARTH_UFFD_SIZE"
	// helperNoFork is the exit code of a fork helper on a kernel without UFFD_FEATURE_EVENT_FORK.
	helperNoFork = 4
)

// helperCmd prepares the test binary as a helper client in mode.
func helperCmd(t *testing.T, mode, socket string, size int) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperSocketEnv+"="+socket, helperSizeEnv+"="+strconv.Itoa(size))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

func runHelper(mode string) int {
	// A helper left blocked on a fault nobody serves cannot be interrupted, but exit_group
	// still ends it: never outlive the test.
	time.AfterFunc(20*time.Second, func() {
		fmt.Println("helper: timed out")
		os.Exit(3)
	})
	socket := os.Getenv(helperSocketEnv)
	size, err := strconv.Atoi(os.Getenv(helperSizeEnv))
	if err == nil {
		switch mode {
		case "fork":
			err = helperFork(socket, size)
		case "past-eof":
			err = helperTouch(socket, size, 0, size)
		case "outside":
			err = helperTouch(socket, size, 1<<20, size+pageSize)
		default:
			err = fmt.Errorf("unknown helper mode %q", mode)
		}
	}
	if errors.Is(err, errNoForkFeature) {
		return helperNoFork
	}
	if err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	return 0
}

// openAndSend creates a client with every wanted feature and hands its first size bytes to
// the server as one region at file offset 0.
func openAndSend(socket string, size, registerExtra int) (*client, error) {
	features, err := probeFeatures()
	if err != nil {
		return nil, err
	}
	c, err := openClient(size, registerExtra, features&wantFeatures)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal([]Region{c.region(0, uint64(size), 0)})
	if err != nil {
		return nil, err
	}
	if _, err := sendHandshake(socket, data, c.uffd); err != nil {
		return nil, err
	}
	return c, nil
}

// helperTouch reads page 0 (which a healthy server serves), says so, then reads the byte
// at badOff, where the test has arranged for the server to fail. It should die there.
func helperTouch(socket string, size, registerExtra, badOff int) error {
	c, err := openAndSend(socket, size, registerExtra)
	if err != nil {
		return err
	}
	if badOff != 0 {
		if !bytes.Equal(c.mem[:pageSize], expected(0, pageSize)) {
			return errors.New("page 0 has wrong contents")
		}
		fmt.Println("served page 0")
	}
	helperSink = c.mem[:cap(c.mem)][badOff] // a store to a global, so the load is not optimised away
	return fmt.Errorf("read at %#x returned: the server should have killed this process", badOff)
}

var helperSink byte

var errNoForkFeature = errors.New("kernel lacks UFFD_FEATURE_EVENT_FORK")

// helperFork is a client that forks while the server runs, for real: the kernel then sends
// UFFD_EVENT_FORK with a new userfaultfd for the child. Before forking it has some memory
// served, writes to some, and removes a range; the child then dumps its whole view of guest
// memory into a pipe with write(2). The copy happens in the kernel, so every page the child
// never had faults to the child's userfaultfd, and only the server can answer. The parent
// compares the dump with what the child must see, then its own memory.
func helperFork(socket string, size int) error {
	c, err := openAndSend(socket, size, 0)
	if err != nil {
		return err
	}
	if c.features&featureEventFork == 0 {
		return errNoForkFeature
	}
	want := expected(0, size)
	if !bytes.Equal(c.mem[:size/4], want[:size/4]) {
		return errors.New("parent: first quarter differs before fork")
	}
	marker := []byte("written by the parent before fork")
	copy(c.mem, marker)
	copy(want, marker)
	lo, hi := size/8, size/2+size/8 // half served by the parent, half never touched
	if err := unix.Madvise(c.mem[lo:hi], unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("madvise: %w", err)
	}
	clear(want[lo:hi])

	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	r := os.NewFile(uintptr(p[0]), "dump-r")
	defer r.Close()
	runtime.LockOSThread()
	pid, errno := forkAndDump(p[1], uintptr(unsafe.Pointer(&c.mem[0])), uintptr(size))
	runtime.UnlockOSThread()
	unix.Close(p[1])
	if errno != 0 {
		return fmt.Errorf("fork: %w", errno)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read child's dump: %w", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return fmt.Errorf("wait for child: %w", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("child did not exit cleanly: %v", ws)
	}
	if err := diff("child", got, want); err != nil {
		return err
	}
	return diff("parent after fork", c.mem, want)
}

func diff(who string, got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d bytes, want %d", who, len(got), len(want))
	}
	for i := 0; i < len(want); i += pageSize {
		if !bytes.Equal(got[i:i+pageSize], want[i:i+pageSize]) {
			return fmt.Errorf("%s: page at %#x differs: got %x…, want %x…", who, i, got[i:i+16], want[i:i+16])
		}
	}
	return nil
}

// Signal masks for forkAndDump, in package variables so no Go code runs to reach them.
var (
	forkBlockAll  = ^uint64(0)
	forkSavedMask uint64
)

// forkAndDump forks (clone with SIGCHLD and nothing shared, i.e. fork(2)); the child
// writes [addr, addr+n) to fd and exits. Go cannot run in a forked child of a
// multi-threaded process, so this is done the way the syscall package's forkAndExecInChild
// does it: between fork and exit the child executes only this function, which is nosplit
// (no stack growth), norace (no race-detector calls) and makes raw system calls only. All
// signals are blocked around the fork so that no Go signal handler runs in the child.
//
//go:nosplit
//go:norace
func forkAndDump(fd int, addr, n uintptr) (pid int, errno syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&forkBlockAll)), uintptr(unsafe.Pointer(&forkSavedMask)), 8, 0, 0)
	r, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if r != 0 || e != 0 {
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
			uintptr(unsafe.Pointer(&forkSavedMask)), 0, 8, 0, 0)
		return int(r), e
	}
	for n > 0 {
		w, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), addr, n)
		if e != 0 {
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 2, 0, 0)
		}
		addr += w
		n -= w
	}
	syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	return 0, 0
}
