package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// TestReapMode runs in a child process that is a subreaper (orphans get reparented to it, as
// to PID 1 in a sandbox), because reaping every child would steal exit statuses from the rest
// of this test binary.
func TestReapMode(t *testing.T) {
	if os.Getenv("HEARTH_REAP_CHILD") == "1" {
		reapChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReapMode$", "-test.v")
	cmd.Env = append(os.Environ(), "HEARTH_REAP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReapMode") {
		t.Fatalf("reaper child failed: %v\n%s", err, out)
	}
}

func reapChild(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("PR_SET_CHILD_SUBREAPER unavailable: %v", err)
	}
	client, _ := newTestClient(t, Options{Reap: true})
	// The grandchild outlives bash and is reparented to us; it must not stay a zombie.
	stream, err := client.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: bash("(sleep 0.2 &) ; exit 5")}))
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*pb.StartResponse](t, stream)
	if r.end.GetExitCode() != 5 {
		t.Fatalf("exit code through the reaper = %v, want 5", r.end)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		z := zombies()
		if len(z) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombie children left: %v", z)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zombies lists this process's children in state Z.
func zombies() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(raw)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		var ppid int
		if len(fields) > 1 {
			fmt.Sscan(fields[1], &ppid)
		}
		if ppid == self && fields[0] == "Z" {
			out = append(out, pid)
		}
	}
	return out
}
