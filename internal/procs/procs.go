// Package procs finds processes by their command line and kills them. Drivers put a marker
// private to their agent (a path under its data dir) in the command lines of the processes
// they start, and reclaim by it, so they never touch another agent's sandboxes.
package procs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Find returns the pids of processes (other than this one) whose argument list satisfies
// match.
func Find(match func(args []string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// HasArg reports whether args contains flag followed by a value with the given prefix.
func HasArg(args []string, flag, valuePrefix string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && strings.HasPrefix(args[i+1], valuePrefix) {
			return true
		}
	}
	return false
}

// KillAndWait SIGKILLs pids and waits up to timeout for them to disappear (zombies of
// processes that are not our children are reaped by their parent, init after a restart).
// It reports whether they are all gone.
func KillAndWait(pids []int, timeout time.Duration) bool {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for {
		alive := false
		for _, pid := range pids {
			if processAlive(pid) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive is false for gone processes and for zombies.
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
