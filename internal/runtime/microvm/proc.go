package microvm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FindProcesses returns the pids of processes whose argument list satisfies match. Drivers
// put a marker private to the agent in their VMM's command line (a path under the agent's
// data dir) and reclaim by it, so they never touch another agent's VMs.
func FindProcesses(match func(args []string) bool) []int {
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

// Tail returns the last lines of the file at path (at most 4 KiB), joined by " | ", for
// error messages: a VM's console log says why it did not come up.
func Tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	const max = 4096
	start := max64(fi.Size()-max, 0)
	buf := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(buf, start)
	ls := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, " | ")
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
