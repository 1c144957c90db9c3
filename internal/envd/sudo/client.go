package sudo

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relayed are the signals the client passes on to the command, as sudo does. SIGKILL and
// SIGSTOP cannot be caught: a killed client makes envd kill the command (see Server.relay).
var relayed = []os.Signal{
	unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGALRM, unix.SIGWINCH, unix.SIGCONT,
}

// Main is sudo: envd runs it when invoked under the name sudo. It returns the exit code; a
// command killed by a signal makes it die by the same signal instead of returning.
func Main(args []string, version string) int {
	inv, err := parseArgs(args)
	if err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(os.Stderr, "sudo: %s\n%s\n", trimUsage(err), usage)
		} else {
			fmt.Fprintf(os.Stderr, "sudo: %v\n", err)
		}
		return 1
	}
	switch inv.act {
	case actHelp:
		fmt.Println(usage)
		return 0
	case actVersion:
		fmt.Printf("Sudo version 1.9 (Hearth envd %s)\n", version)
		return 0
	case actNothing:
		return 0
	case actCheck, actList:
		inv.req.Check = true
	}
	if cwd, err := os.Getwd(); err == nil {
		inv.req.Cwd = cwd
	} else {
		inv.req.Cwd = "/" // a deleted working directory: sudo's command starts in /
	}
	inv.req.Env = os.Environ()
	path := os.Getenv(SocketEnv)
	if path == "" {
		path = SocketPath
	}
	end, err := run(path, inv.req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sudo: %v\n", err)
		return 1
	}
	if inv.act == actList {
		fmt.Printf("User %s may run the following commands in this sandbox:\n    (ALL : ALL) NOPASSWD: ALL\n", currentName())
	}
	if end.Signal > 0 {
		dieBySignal(unix.Signal(end.Signal))
	}
	return end.Exit
}

func trimUsage(err error) string {
	msg := err.Error()
	if p := errUsage.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

func currentName() string {
	if u, err := lookupUID(fmt.Sprint(os.Getuid())); err == nil {
		return u.Name
	}
	return fmt.Sprint(os.Getuid())
}

// run sends req to envd with this process's stdio and relays signals until the command ends.
func run(path string, req request) (reply, error) {
	msg := encode(req)
	if len(msg) > maxRequest {
		return reply{}, errors.New("argument list and environment too long")
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return reply{}, fmt.Errorf("cannot reach envd's sudo service at %s: %w", path, err)
	}
	defer c.Close()

	// Catch the relayed signals before anything starts, so none is lost or kills sudo
	// while the command runs.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, relayed...)
	defer signal.Stop(sigs)

	fds, closeStdio := stdio()
	defer closeStdio()
	if _, _, err := c.WriteMsgUnix(msg, unix.UnixRights(fds...), nil); err != nil {
		return reply{}, fmt.Errorf("send request to envd: %w", err)
	}
	r := newLineReader(c)
	var first reply
	if err := r.next(&first, 64<<10); err != nil {
		return reply{}, fmt.Errorf("no answer from envd: %w", err)
	}
	switch {
	case first.Error != "":
		return reply{}, errors.New(first.Error)
	case req.Check:
		return reply{}, nil
	case first.Done:
		return first, nil
	}

	replies := make(chan reply, 1)
	failed := make(chan error, 1)
	go func() {
		var end reply
		if err := r.next(&end, 64<<10); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			failed <- err
			return
		}
		replies <- end
	}()
	for {
		select {
		case s := <-sigs:
			n, ok := s.(syscall.Signal)
			if !ok {
				continue
			}
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(encode(clientMsg{Signal: int(n)}))
		case end := <-replies:
			return end, nil
		case err := <-failed:
			return reply{}, fmt.Errorf("lost envd while the command ran: %w", err)
		}
	}
}

// stdio returns this process's descriptors 0, 1 and 2 for the command, with /dev/null in
// place of any that is closed.
func stdio() ([]int, func()) {
	var opened []*os.File
	fds := []int{0, 1, 2}
	for i, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			continue
		}
		mode := os.O_RDONLY
		if i > 0 {
			mode = os.O_WRONLY
		}
		if f, err := os.OpenFile(os.DevNull, mode, 0); err == nil {
			opened = append(opened, f)
			fds[i] = int(f.Fd())
		}
	}
	return fds, func() {
		for _, f := range opened {
			f.Close()
		}
	}
}

// dieBySignal ends this process with sig, so the caller sees what the command's caller would:
// the Go runtime's handlers are bypassed by restoring the kernel's default action, unblocking
// sig and sending it to this thread. A signal whose default is to be ignored, or one that
// does not end the process for another reason, falls back to exit status 128+sig like a
// shell.
func dieBySignal(sig unix.Signal) {
	signal.Reset(sig)
	runtime.LockOSThread()
	var sa [4]uint64 // struct kernel_sigaction, zeroed: SIG_DFL, no flags, empty mask
	_, _, _ = unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
	var set unix.Sigset_t
	set.Val[(sig-1)/64] |= 1 << ((uint(sig) - 1) % 64)
	_ = unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), sig)
	time.Sleep(200 * time.Millisecond)
	os.Exit(128 + int(sig))
}
