package identity

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread whose filesystem uid, gid and groups are the user's, so the
// kernel checks permissions and sets ownership exactly as for that user. It needs envd to run
// as root; otherwise fn runs with envd's own credentials (development on a host).
//
// setfsuid, setfsgid and the raw setgroups syscall change only the calling thread, which is
// why the goroutine is locked to it. If the thread cannot be restored it is left locked, and
// the Go runtime discards it when the goroutine exits.
func Do(u User, fn func() error) error {
	if !IsRoot() || u.UID == 0 {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := unix.Getgroups()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("read envd's groups: %w", err)
	}
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("set groups for %s: %w", u.Name, err)
	}
	_, _ = unix.SetfsgidRetGid(int(u.GID))
	_, _ = unix.SetfsuidRetUid(int(u.UID))
	err = fn()
	_, _ = unix.SetfsuidRetUid(0)
	_, _ = unix.SetfsgidRetGid(0)
	// setfsuid returns the previous value, so a second call that sets 0 reads back whether the
	// first one took.
	prev, _ := unix.SetfsuidRetUid(0)
	if unix.Setgroups(orig) == nil && prev == 0 {
		runtime.UnlockOSThread()
	}
	return err
}
