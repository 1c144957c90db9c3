package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrCannotActAs means envd could not take on a user's credentials, so it refused to do the
// work at all rather than do it with its own.
var ErrCannotActAs = errors.New("envd cannot act as user")

// envd's own credentials, read once at start-up: inside Do the calling thread reports the
// user's, so they must not be read again there.
var (
	processUID                 = os.Geteuid()
	processGroups, groupsError = unix.Getgroups()
)

// probeUID is nobody's, which need not exist in /etc/passwd for the probe.
const probeUID = 65534

// IsRoot reports whether envd runs with root privileges, which it needs to act as other users.
func IsRoot() bool { return processUID == 0 }

// Do runs fn on an OS thread whose effective uid, gid and supplementary groups are the user's,
// so the kernel checks permissions and sets ownership exactly as for that user.
//
// The credentials are changed with raw setresuid/setresgid/setgroups, which (unlike Go's
// syscall.Setuid family) change only the calling thread; the goroutine is locked to it. Real
// and saved ids stay 0, so the thread can become root again, and a process of the user cannot
// signal or trace envd meanwhile. setfsuid is not used: gVisor does not implement it.
//
// Do fails closed: when envd cannot become the user (not root, a kernel that ignores
// per-thread credentials, a failing syscall) it returns ErrCannotActAs and fn does not run.
// A thread that cannot be restored to root stays locked and the Go runtime discards it when
// the goroutine exits.
func Do(u User, fn func() error) error {
	if !IsRoot() {
		if u.UID == uint32(processUID) {
			return fn()
		}
		return fmt.Errorf("%w %s: envd runs as uid %d, not root; act as uid %d or run envd as root", ErrCannotActAs, u.Name, processUID, processUID)
	}
	if u.UID == 0 {
		return fn()
	}
	if err := Verify(); err != nil {
		return fmt.Errorf("%w %s: %v", ErrCannotActAs, u.Name, err)
	}
	runtime.LockOSThread()
	if err := become(int(u.UID), int(u.GID), groupInts(u.Groups)); err != nil {
		if restore() == nil {
			runtime.UnlockOSThread()
		}
		return fmt.Errorf("%w %s: %v", ErrCannotActAs, u.Name, err)
	}
	err := fn()
	if restore() == nil {
		runtime.UnlockOSThread()
	}
	return err
}

func groupInts(gs []uint32) []int {
	out := make([]int, len(gs))
	for i, g := range gs {
		out[i] = int(g)
	}
	return out
}

// become switches the calling thread to uid, gid and groups, and checks that it took.
func become(uid, gid int, groups []int) error {
	if err := unix.Setgroups(groups); err != nil { // the raw, per-thread syscall
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := setresgid(-1, gid, -1); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := setresuid(-1, uid, -1); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if _, e, _ := unix.Getresuid(); e != uid {
		return fmt.Errorf("effective uid is %d after setresuid(%d)", e, uid)
	}
	if _, e, _ := unix.Getresgid(); e != gid {
		return fmt.Errorf("effective gid is %d after setresgid(%d)", e, gid)
	}
	return nil
}

// restore makes the calling thread root again with envd's own groups.
func restore() error {
	if err := setresuid(-1, 0, -1); err != nil {
		return fmt.Errorf("restore uid: %w", err)
	}
	if err := setresgid(-1, 0, -1); err != nil {
		return fmt.Errorf("restore gid: %w", err)
	}
	if groupsError != nil {
		return fmt.Errorf("envd's groups were unreadable at start-up: %w", groupsError)
	}
	if err := unix.Setgroups(processGroups); err != nil {
		return fmt.Errorf("restore groups: %w", err)
	}
	if _, e, _ := unix.Getresuid(); e != 0 {
		return fmt.Errorf("effective uid is %d after restoring root", e)
	}
	return nil
}

// setresuid and setresgid are the raw syscalls: unix.Setresuid applies to every thread.
func setresuid(r, e, s int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(r), uintptr(e), uintptr(s)); errno != 0 {
		return errno
	}
	return nil
}

func setresgid(r, g, s int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(r), uintptr(g), uintptr(s)); errno != 0 {
		return errno
	}
	return nil
}

var verify = sync.OnceValue(probe)

// Verify checks, once, that switching a thread's credentials really changes what the kernel
// allows: a thread switched to nobody must be refused a file only root may read, and must be
// root again afterwards. Do calls it before acting as anyone; envd calls it at start-up to
// report the problem early.
func Verify() error {
	if !IsRoot() {
		return nil
	}
	return verify()
}

func probe() error {
	dir, err := os.MkdirTemp("", "envd-identity-probe-")
	if err != nil {
		return fmt.Errorf("credential probe: %w", err)
	}
	defer os.RemoveAll(dir)
	secret := filepath.Join(dir, "root-only")
	if err := os.WriteFile(secret, nil, 0o600); err != nil {
		return fmt.Errorf("credential probe: %w", err)
	}
	// The directory must be searchable for the open to reach the file's own permissions.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("credential probe: %w", err)
	}
	runtime.LockOSThread()
	opened := func() error {
		if err := become(probeUID, probeUID, []int{probeUID}); err != nil {
			return err
		}
		f, err := os.Open(secret)
		if err == nil {
			f.Close()
			return errors.New("a thread switched to uid 65534 could still open a root-only file: the kernel ignores per-thread credentials")
		}
		if !errors.Is(err, unix.EACCES) {
			return fmt.Errorf("open a root-only file as uid 65534: %w, want EACCES", err)
		}
		return nil
	}()
	if err := restore(); err != nil {
		return fmt.Errorf("credential probe: %w", err) // the thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
	if opened != nil {
		return fmt.Errorf("credential probe: %w", opened)
	}
	if f, err := os.Open(secret); err != nil {
		return fmt.Errorf("credential probe: root cannot open its file after switching back: %w", err)
	} else {
		f.Close()
	}
	return nil
}
