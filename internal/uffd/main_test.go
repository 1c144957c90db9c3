package uffd

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

// TestMain runs helper modes of the test binary (see helper_test.go) and otherwise the tests.
//
// In-process clients fault on their own memory, and a goroutine blocked in a fault inside
// assembly (bytes.Equal) keeps its P: the runtime cannot preempt it there. With as many
// such readers as Ps, the server goroutine could never get a P back after poll returns,
// and the test would deadlock. Enough Ps for every reader plus the server avoids that;
// the blocked threads use no CPU, so this does not oversubscribe the machine.
//
// The collector is off for the same reason: a stop-the-world pause waits for every
// goroutine to stop, a goroutine faulting inside assembly never does, and the server
// goroutine that would serve its fault is already stopped, so the whole binary (its test
// timeout included) hangs for good. Seen under load in CI; the tests allocate a few hundred
// MiB at most.
func TestMain(m *testing.M) {
	debug.SetGCPercent(-1)
	if runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// minProcs leaves Ps for the server, timers and the test runner beyond the (at most 4)
// goroutines any test has blocked on faults at once.
const minProcs = 8
