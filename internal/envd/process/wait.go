package process

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitStatus is how a process ended.
type exitStatus struct {
	ws  unix.WaitStatus
	err error // the wait itself failed
}

// starter starts commands and reports their exit. Inside a sandbox envd is PID 1 and must also
// reap orphans that get reparented to it, which means calling wait4(-1) — and that would steal
// the exit status of envd's own children from exec.Cmd.Wait. So in that mode one reaper owns
// every wait and hands statuses of known children to their waiters.
type starter interface {
	start(cmd *exec.Cmd) (<-chan exitStatus, error)
}

// childWaiter waits for each child on its own; for envd running as an ordinary process.
type childWaiter struct{}

func (childWaiter) start(cmd *exec.Cmd) (<-chan exitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan exitStatus, 1)
	go func() {
		st, err := cmd.Process.Wait()
		if err != nil {
			ch <- exitStatus{err: err}
			return
		}
		ch <- exitStatus{ws: unix.WaitStatus(st.Sys().(syscall.WaitStatus))}
	}()
	return ch, nil
}

// reaper is the PID 1 mode: it reaps every child on SIGCHLD.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan exitStatus
}

func newReaper() *reaper {
	r := &reaper{waiters: map[int]chan exitStatus{}}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
	return r
}

func (r *reaper) start(cmd *exec.Cmd) (<-chan exitStatus, error) {
	// Holding the lock across start and registration keeps the reaper from collecting a child
	// that exits before its waiter is registered.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan exitStatus, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- exitStatus{ws: ws}
		}
	}
}

// describe renders an exit like os.ProcessState.String does, which is what E2B's envd reports
// as the end event's status.
func describe(ws unix.WaitStatus) (code int32, exited bool, status string) {
	switch {
	case ws.Exited():
		return int32(ws.ExitStatus()), true, fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return -1, false, s
	default:
		return -1, false, fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
