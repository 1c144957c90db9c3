package envd

import (
	"time"

	"golang.org/x/sys/unix"
)

// setClock sets the system wall clock. A VM restored from a snapshot keeps the time it was
// paused at; the host sends its own time in /init.
func setClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}
