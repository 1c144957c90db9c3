package gvisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/cgroups"
	"github.com/hearthsh/hearth/internal/runtime"
)

var modes = []struct {
	name string
	mode CreateMode
}{
	{"restore", CreateRestore},
	{"cold", CreateCold},
}

// envdHealthy asserts that envd answers GET /health on the sandbox's guest address.
func envdHealthy(t *testing.T, sb *sandbox) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/health", sb.spec.EnvdAddr()))
	if err != nil {
		t.Fatalf("envd /health on %s: %v", sb.spec.EnvdAddr(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("envd /health: status %d, want 204", resp.StatusCode)
	}
}

// envdSocketHealthy checks that envd answers on its host socket, the agent's path to it.
func envdSocketHealthy(t *testing.T, d *Driver, sb *sandbox) {
	t.Helper()
	sock := d.EnvdSocket(sb.spec)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://envd/health")
	if err != nil {
		t.Fatalf("envd /health on %s: %v", sock, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("envd /health on %s: status %d, want 204", sock, resp.StatusCode)
	}
}

func TestCreateAnswersHealthOnGuestIP(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			d := testDriver(t, m.mode)
			// Two sandboxes per mode: with restore, the first takes the template snapshot
			// and the second is restored from it into a different slot and address.
			for i := 0; i < 2; i++ {
				sb := create(t, d, 1, 512)
				envdHealthy(t, sb)
				envdSocketHealthy(t, d, sb)
				if got := execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "id -u user; python --version"); got == "" {
					t.Fatalf("exec in sandbox printed nothing")
				}
			}
		})
	}
}

func TestSandboxesDoNotSeeEachOthersWrites(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			d := testDriver(t, m.mode)
			before := fingerprint(t, testEnv.TemplateDir)
			a := create(t, d, 1, 512)
			b := create(t, d, 1, 512)
			execIn(t, d, a.spec.ID, "/bin/sh", "-c", "echo from-a > /root/marker && echo a > /etc/only-a && rm /etc/debian_version")
			execIn(t, d, b.spec.ID, "/bin/sh", "-c", "echo from-b > /root/marker")
			if got := execIn(t, d, a.spec.ID, "cat", "/root/marker"); got != "from-a" {
				t.Errorf("a reads its own marker as %q", got)
			}
			if got := execIn(t, d, b.spec.ID, "cat", "/root/marker"); got != "from-b" {
				t.Errorf("b reads its marker as %q, want its own write", got)
			}
			probe := "for f in /etc/only-a /etc/debian_version; do test -e $f && echo yes || echo no; done"
			if got, want := execIn(t, d, b.spec.ID, "/bin/sh", "-c", probe), "no\nyes"; got != want {
				t.Errorf("b sees a's file changes: only-a, debian_version exist = %q, want %q", got, want)
			}
			if got, want := execIn(t, d, a.spec.ID, "/bin/sh", "-c", probe), "yes\nno"; got != want {
				t.Errorf("a's own changes: only-a, debian_version exist = %q, want %q", got, want)
			}
			if diff := diffFingerprints(before, fingerprint(t, testEnv.TemplateDir)); len(diff) > 0 {
				t.Errorf("template dir changed: %v", diff)
			}
		})
	}
}

func TestResourceLimitsApplied(t *testing.T) {
	cases := []struct {
		name   string
		mode   CreateMode
		cpus   int
		memMiB int
	}{
		{"restore", CreateRestore, 1, 256},
		{"restore", CreateRestore, 2, 768},
		{"cold", CreateCold, 1, 384},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%dcpu-%dMiB", c.name, c.cpus, c.memMiB), func(t *testing.T) {
			d := testDriver(t, c.mode)
			sb := create(t, d, c.cpus, c.memMiB)
			if got, want := readCgroupInt(t, "memory", sb.spec.ID, "memory.limit_in_bytes"), int64(c.memMiB)<<20; got != want {
				t.Errorf("memory.limit_in_bytes = %d, want %d", got, want)
			}
			if got, want := readCgroupInt(t, "cpu", sb.spec.ID, "cpu.cfs_quota_us"), int64(c.cpus)*cpuPeriod; got != want {
				t.Errorf("cpu.cfs_quota_us = %d, want %d", got, want)
			}
			// The sandbox's processes are really in that cgroup, not just the directory made.
			if n := len(cgroups.PIDs(cgroups.Dirs(cgroupPath(testCgroup, sb.spec.ID))[0])); n == 0 {
				t.Errorf("no process in the sandbox's cgroup")
			}
		})
	}
}

func TestPauseResumeKeepsFilesAndProcesses(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testPauseResume(t, m.mode) })
	}
}

func testPauseResume(t *testing.T, mode CreateMode) {
	d := testDriver(t, mode)
	sb := create(t, d, 1, 512)
	execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "echo keep-me > /home/user/note")
	// The loop is started through envd and detached from the starting shell, like a user's
	// background job; it writes as the default user. It renames each value into place: with
	// "echo > counter" a reader can land between the truncation and the write and see nothing.
	envdRun(t, sb, "(i=0; while :; do i=$((i+1)); echo $i > /home/user/counter.new; mv /home/user/counter.new /home/user/counter; sleep 0.1; done) >/dev/null 2>&1 &")
	counter := func() int {
		t.Helper()
		s := execIn(t, d, sb.spec.ID, "cat", "/home/user/counter")
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("counter %q: %v", s, err)
		}
		return n
	}
	waitForFile(t, d, sb.spec.ID, "/home/user/counter")
	for cycle := 1; cycle <= 3; cycle++ {
		before := counter()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		if err := d.Pause(ctx, sb.spec); err != nil {
			cancel()
			t.Fatalf("cycle %d: pause: %v", cycle, err)
		}
		if _, err := d.runsc.state(ctx, containerID(sb.spec.ID)); !isNotExist(err) {
			t.Errorf("cycle %d: container still known to runsc after pause (err %v)", cycle, err)
		}
		if p := sandboxProcesses(sb.spec.ID); len(p) > 0 {
			t.Errorf("cycle %d: processes left after pause: %v", cycle, p)
		}
		if err := sb.slot.ReAdd(); err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := d.Resume(ctx, sb.spec); err != nil {
			cancel()
			t.Fatalf("cycle %d: resume: %v", cycle, err)
		}
		cancel()
		envdHealthy(t, sb)
		envdSocketHealthy(t, d, sb)
		if got := execIn(t, d, sb.spec.ID, "cat", "/home/user/note"); got != "keep-me" {
			t.Errorf("cycle %d: file after resume = %q", cycle, got)
		}
		after := counter()
		if after < before {
			t.Errorf("cycle %d: counter went back from %d to %d: process state lost", cycle, before, after)
		}
		time.Sleep(500 * time.Millisecond)
		if later := counter(); later <= after {
			t.Errorf("cycle %d: counter stuck at %d after resume: background process not running", cycle, later)
		}
	}
}

// leftovers lists what remains of sandbox id on the host.
func leftovers(t *testing.T, d *Driver, id string) []string {
	t.Helper()
	var out []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.runsc.state(ctx, containerID(id)); !isNotExist(err) {
		out = append(out, fmt.Sprintf("runsc container (state err %v)", err))
	}
	if dirs := cgroups.Dirs(cgroupPath(d.cfg.CgroupParent, id)); len(dirs) > 0 {
		out = append(out, fmt.Sprintf("cgroups %v", dirs))
	}
	for _, pid := range rootProcesses(d.runsc.root) {
		out = append(out, fmt.Sprintf("process %d", pid))
	}
	return out
}

func TestDestroyLeavesNothing(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, d *Driver, sb *sandbox)
	}{
		{"running", func(t *testing.T, d *Driver, sb *sandbox) {}},
		{"paused", func(t *testing.T, d *Driver, sb *sandbox) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := d.Pause(ctx, sb.spec); err != nil {
				t.Fatal(err)
			}
		}},
		{"runsc-paused", func(t *testing.T, d *Driver, sb *sandbox) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if _, err := d.runsc.output(ctx, runtime.Spec{}, "pause", containerID(sb.spec.ID)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := testDriver(t, CreateRestore)
			sb := create(t, d, 1, 512)
			c.prepare(t, d, sb)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := d.Destroy(ctx, sb.spec); err != nil {
				t.Fatal(err)
			}
			if l := leftovers(t, d, sb.spec.ID); len(l) > 0 {
				t.Errorf("left after destroy: %v", l)
			}
			if _, err := os.Stat(sb.spec.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("sandbox dir still there: %v", err)
			}
			if err := d.Destroy(ctx, sb.spec); err != nil {
				t.Errorf("second destroy: %v", err)
			}
		})
	}
}

func TestReclaimAfterCrash(t *testing.T) {
	requireEnv(t)
	// A driver with its own runsc root and cgroup parent, standing for an agent that died.
	d, err := New(Config{
		Runsc:        testEnv.Runsc,
		StateDir:     testRoot + "-crash",
		SnapshotDir:  testEnv.DataDir + "/snapshots/gvisor",
		CgroupParent: testCgroup + "-crash",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reclaim(d) })
	a := create(t, d, 1, 256)
	b := create(t, d, 1, 256)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Pause(ctx, b.spec); err != nil { // a paused one has nothing to reclaim
		t.Fatal(err)
	}
	// The crash: every runsc process of this root dies at once, nothing cleans up.
	pids := rootProcesses(d.runsc.root)
	if len(pids) == 0 {
		t.Fatal("no runsc processes found for the running sandbox")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	if len(cgroups.Dirs("/"+d.cfg.CgroupParent)) == 0 {
		t.Fatal("expected the crash to leave cgroups behind")
	}
	if err := d.Reclaim(ctx); err != nil {
		t.Fatalf("reclaim: %v", err)
	}
	if l := leftovers(t, d, a.spec.ID); len(l) > 0 {
		t.Errorf("left after reclaim: %v", l)
	}
	if dirs := cgroups.Dirs("/" + d.cfg.CgroupParent); len(dirs) > 0 {
		t.Errorf("cgroup parent left: %v", dirs)
	}
	if ids, err := d.runsc.list(ctx); err != nil || len(ids) > 0 {
		t.Errorf("runsc still lists %v (err %v)", ids, err)
	}
	if err := unmountUnder(d.runsc.root); err != nil {
		t.Error(err)
	}
	if ents, _ := os.ReadDir(d.runsc.root); len(ents) > 0 {
		t.Errorf("runsc root not empty: %v", ents)
	}
	if _, err := os.Stat(b.spec.Dir + "/" + snapshotDir + "/checkpoint.img"); err != nil {
		t.Errorf("reclaim removed a paused sandbox's snapshot: %v", err)
	}
}

// A sandbox that uses most of its memory can be paused and resumed: runsc needs more than
// the sandbox's limit to checkpoint and restore it, and under that limit it would be killed.
func TestResumeNearMemoryLimit(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 256)
	envdRun(t, sb, "python3 -c 'import os,time; b=os.urandom(230<<20); open(\"/tmp/sum\",\"w\").write(str(hash(b))); time.sleep(1e6)' >/dev/null 2>&1 &")
	deadline := time.Now().Add(30 * time.Second)
	for execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "cat /tmp/sum 2>/dev/null || true") == "" {
		if time.Now().After(deadline) {
			t.Fatal("memory hog did not start")
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Pause(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	if err := sb.slot.ReAdd(); err != nil {
		t.Fatal(err)
	}
	if err := d.Resume(ctx, sb.spec); err != nil {
		t.Fatalf("resume of a sandbox near its memory limit: %v", err)
	}
	envdHealthy(t, sb)
	if out := execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "pgrep -f os.urandom >/dev/null && echo alive"); out != "alive" {
		t.Fatalf("memory hog after resume: %q", out)
	}
	// The limit is put back in the background once the restore's extra memory drains; it never
	// exceeds the transient one.
	if got := readCgroupInt(t, "memory", sb.spec.ID, "memory.limit_in_bytes"); got > int64(transientMemoryMiB(sb.spec))<<20 {
		t.Fatalf("memory limit after resume is %d", got)
	}
}

// TestPauseRefusedWhileSandboxListensOnHostSocket: root in the sandbox can bind a socket in
// the directory shared with the host, and gVisor cannot checkpoint it (the checkpoint would
// kill the sandbox); Pause must fail with a message that says what to do and leave the
// sandbox running with envd's socket served.
func TestPauseRefusedWhileSandboxListensOnHostSocket(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 512)
	// As root (runsc exec): the directory is root's only.
	execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "python3 -c 'import socket,time; s=socket.socket(socket.AF_UNIX); s.bind(\""+guestSocketDir+"/mine.sock\"); s.listen(); time.sleep(120)' >/dev/null 2>&1 &")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(sb.spec.Dir, hostSocketDir, "mine.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox's listener never appeared in the shared directory")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	err := d.Pause(ctx, sb.spec)
	if err == nil || !strings.Contains(err.Error(), "mine.sock") {
		t.Fatalf("Pause = %v, want an error naming mine.sock", err)
	}
	envdHealthy(t, sb)
	envdSocketHealthy(t, d, sb)
	// Under gVisor a bound host socket lives as long as its file, even after its process ends.
	execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "pkill -f 'mine[.]sock'; rm "+guestSocketDir+"/mine?sock")
	if err := d.Pause(ctx, sb.spec); err != nil {
		t.Fatalf("Pause after the socket was removed: %v", err)
	}
}

// TestEnvdSocketSurvivesGuestAddressRemoved: root in the sandbox removes its own address, so
// envd's address no longer answers; the agent's path to envd, the host socket, still does.
func TestEnvdSocketSurvivesGuestAddressRemoved(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 512)
	// An RTM_DELADDR of the sandbox's address on eth0, as `ip addr del` sends.
	execIn(t, d, sb.spec.ID, "python3", "-c", `
import socket, struct, sys
idx = socket.if_nametoindex("eth0")
addr = socket.inet_aton(sys.argv[1])
attr = struct.pack("HH", 8, 2) + addr  # IFA_LOCAL
msg = struct.pack("BBBBI", socket.AF_INET, 30, 0, 0, idx) + attr
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.send(struct.pack("IHHII", 16 + len(msg), 21, 5, 1, 0) + msg)
_, typ, _, _, _, err = struct.unpack("IHHIIi", s.recv(4096)[:20])
assert typ == 2 and err == 0, (typ, err)
`, sb.spec.Net.GuestIP.String())
	c := &http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Get(fmt.Sprintf("http://%s/health", sb.spec.EnvdAddr())); err == nil {
		resp.Body.Close()
		t.Fatalf("envd still answers on %s after its address was removed: the test did not take the network down", sb.spec.EnvdAddr())
	}
	envdSocketHealthy(t, d, sb)
}
