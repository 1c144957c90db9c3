// Package sandbox is the host agent's sandbox manager: it owns every sandbox's state
// machine and drives the runtime driver, the network slot pool, the connection tracker and
// envd through create, pause, resume and destroy.
package sandbox

import (
	"errors"
	"fmt"
)

// State is where a sandbox is in its life. The transitions are
//
//	starting → running → pausing → paused → resuming → running
//	running|paused → stopping → stopped
//
// and a failed pause or resume falls back to the state it started from.
type State string

const (
	Starting State = "starting"
	Running  State = "running"
	Pausing  State = "pausing"
	Paused   State = "paused"
	Resuming State = "resuming"
	Stopping State = "stopping"
	Stopped  State = "stopped"
	// Forking: a running sandbox being copied (it runs again once its snapshot is taken).
	Forking State = "forking"
)

// Transitional states refuse every new operation on the sandbox.
func (s State) Transitional() bool {
	return s == Starting || s == Pausing || s == Resuming || s == Stopping || s == Forking
}

// ErrNotFound means no sandbox has the ID.
var ErrNotFound = errors.New("sandbox not found")

// BusyError is returned for an operation on a sandbox in a state that does not allow it.
// Callers map it to HTTP 409 / Connect failed_precondition.
type BusyError struct {
	ID    string
	State State
	Op    string
}

func (e *BusyError) Error() string {
	if e.State.Transitional() {
		return fmt.Sprintf("sandbox %s is %s: %s refused until it finishes", e.ID, e.State, e.Op)
	}
	return fmt.Sprintf("sandbox %s is %s: cannot %s it", e.ID, e.State, e.Op)
}
