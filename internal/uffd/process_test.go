package uffd

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForkedChildIsServed runs a client that really forks while the server runs (see
// helperFork). The child's view of guest memory must be exact: pages the parent had, the
// parent's own writes, zeros for what it removed, and file contents for pages that only the
// child's userfaultfd, adopted by the server from UFFD_EVENT_FORK, can fill. The session
// then ends cleanly when the client exits.
func TestForkedChildIsServed(t *testing.T) {
	availableFeatures(t)
	const size = 16 << 20
	ts, _ := setup(t, size, Config{MaxSessions: 1})
	cmd, out := helperCmd(t, "fork", ts.socket, size)
	err := cmd.Run()
	if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == helperNoFork {
		t.Skip("kernel lacks UFFD_FEATURE_EVENT_FORK")
	}
	if err != nil {
		t.Fatalf("fork helper: %v\n%s", err, out)
	}
	serveErr, timeout := ts.wait(10 * time.Second)
	if timeout != nil {
		t.Fatalf("session did not end when the client exited: %v", timeout)
	}
	if serveErr != nil {
		t.Fatalf("Serve: %v", serveErr)
	}
	if st := ts.Stats(); st.Forks != 1 || st.Killed != 0 {
		t.Errorf("stats %+v: want 1 fork and no kill", st)
	}
}

// TestFatalErrorKillsPeer makes the server fail with a client in another process waiting
// on a fault. The server must SIGKILL it (a VM must not stay hung) and report why.
func TestFatalErrorKillsPeer(t *testing.T) {
	availableFeatures(t)
	const size = 8 << 20
	tests := []struct {
		mode       string
		fileSize   int
		wantErr    string
		wantServed bool
	}{
		// The client describes more memory than the file holds: nothing can be served.
		{"past-eof", size / 2, "past the end", false},
		// The client registered more than it described and faults there.
		{"outside", size, "outside every known region", true},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := shortTempDir(t)
			memFile := filepath.Join(dir, "mem")
			writeMemFile(t, memFile, tt.fileSize)
			ts := startServer(t, dir, memFile, Config{MaxSessions: 1})
			cmd, out := helperCmd(t, tt.mode, ts.socket, size)
			err := cmd.Run()
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("helper ended with %v, want killed by SIGKILL\n%s", err, out)
			}
			if served := strings.Contains(out.String(), "served page 0"); served != tt.wantServed {
				t.Errorf("helper served page 0: %v, want %v\n%s", served, tt.wantServed, out)
			}
			serveErr, timeout := ts.wait(10 * time.Second)
			if timeout != nil {
				t.Fatal(timeout)
			}
			if serveErr == nil || !strings.Contains(serveErr.Error(), tt.wantErr) {
				t.Errorf("Serve returned %v, want an error about %q", serveErr, tt.wantErr)
			}
			if st := ts.Stats(); st.Killed != 1 {
				t.Errorf("%d peers killed, want 1", st.Killed)
			}
		})
	}
}
