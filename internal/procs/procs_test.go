package procs

import (
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFindAndKillByMarker(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "marker")
	// The marker rides in the shell's argv, as drivers put theirs in a VMM's command line.
	// `read` is a builtin waiting on a pipe we never close, so no grandchild outlives the kill.
	cmd := exec.Command("/bin/sh", "-c", "read x", "sh", "-pidfile", marker)
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	pids := Find(func(args []string) bool { return HasArg(args, "-pidfile", marker) })
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Fatalf("Find = %v, want [%d]", pids, cmd.Process.Pid)
	}
	if pids := Find(func(args []string) bool { return HasArg(args, "-pidfile", marker+"-other") }); len(pids) != 0 {
		t.Fatalf("Find matched another marker: %v", pids)
	}
	if !KillAndWait(pids, 5*time.Second) {
		t.Fatal("KillAndWait: process still alive")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("killed process was not reaped")
	}
}
