package agent

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
)

// crashNet keeps the crash tests' agents apart from the other tests' (and from other test
// runs on the machine): they kill agents and reclaim what they find under these names.
var crashNet = agentNet{"hcra", netip.MustParsePrefix("10.236.0.0/16"), "hearth-crash-test"}

// crashAgentEnv makes the test binary the agent process of the crash tests: a real agent
// (startAgent) over the data dir it names, killed with SIGKILL by the parent test.
const crashAgentEnv = "HEARTH_CRASH_AGENT"

// crashAgentWarmEnv, when set, gives the agent process that warm pool (--warm-pool's form),
// on the warm pool tests' network and cgroups.
const crashAgentWarmEnv = "HEARTH_CRASH_AGENT_WARM"

// TestCrashAgentChild is the agent process of the crash tests; it only runs when they start
// it. It prints its addresses, then serves until it is killed.
func TestCrashAgentChild(t *testing.T) {
	dir := os.Getenv(crashAgentEnv)
	if dir == "" {
		t.Skip("the agent process of the crash tests, started by them")
	}
	an, opts := crashNet, []func(*sandbox.Config){}
	if sizes := os.Getenv(crashAgentWarmEnv); sizes != "" {
		pool, err := sandbox.ParseWarmPool(sizes)
		if err != nil {
			t.Fatal(err)
		}
		an = warmNet
		opts = append(opts, func(c *sandbox.Config) { c.WarmPool = sandbox.WarmPool{Sizes: pool, CPUs: 1, MemoryMiB: 512} })
	}
	h := startAgentOn(t, setupEnv(t), dir, an, opts...)
	fmt.Printf("READY %s %s\n", h.rpcURL, h.proxyURL)
	time.Sleep(time.Hour) // until SIGKILL
}

// crashAgent is an agent in its own process, so a test can kill it at any instant.
type crashAgent struct {
	*harness
	cmd *exec.Cmd
}

// startCrashAgent starts an agent process over dataDir and waits until it has recovered and
// serves. Its log goes to agent.log in the test's log dir. The caller kills it.
func startCrashAgent(t *testing.T, dataDir, logDir string, env ...string) *crashAgent {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(logDir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	mark, _ := logf.Seek(0, 2)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashAgentChild$", "-test.v", "-test.timeout=30m")
	cmd.Env = append(append(os.Environ(), crashAgentEnv+"="+dataDir, "HEARTH_REQUIRE_RUNTIME=1"), env...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ca := &crashAgent{cmd: cmd}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
				ready <- f[1:]
			}
		}
		close(ready)
	}()
	select {
	case f, ok := <-ready:
		if !ok {
			ca.kill()
			t.Fatalf("agent process exited before it was ready; its log: %s", tail(filepath.Join(logDir, "agent.log")))
		}
		ca.harness = &harness{
			rpc:      hostagentv1connect.NewHostAgentServiceClient(h2cClient(), f[0]),
			rpcURL:   f[0],
			proxyURL: f[1],
			dataDir:  dataDir,
		}
		// What the start did with interrupted pauses, to see which cases a run met.
		if b, err := os.ReadFile(filepath.Join(logDir, "agent.log")); err == nil && int64(len(b)) >= mark {
			for line := range strings.SplitSeq(string(b[mark:]), "\n") {
				if strings.Contains(line, `msg="recover pause`) || strings.Contains(line, "finish interrupted") {
					t.Log("agent start:", line[strings.Index(line, "msg="):])
				}
			}
		}
	case <-time.After(3 * time.Minute):
		ca.kill()
		t.Fatalf("agent process not ready after 3 minutes; its log: %s", tail(filepath.Join(logDir, "agent.log")))
	}
	return ca
}

// kill ends the agent as a crash would: SIGKILL, nothing cleaned up.
func (c *crashAgent) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (c *crashAgent) createSandbox(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.rpc.Create(ctx, connect.NewRequest(&pb.CreateRequest{SandboxId: id, Template: "base", Cpus: 1, MemoryMib: 256})); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

func (c *crashAgent) pause(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: id}))
	return err
}

func (c *crashAgent) resume(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: id}))
	return err
}

// states returns every sandbox the agent lists, with its state.
func (c *crashAgent) states(t *testing.T) map[string]pb.State {
	t.Helper()
	res, err := c.rpc.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]pb.State{}
	for _, s := range res.Msg.GetSandboxes() {
		out[s.GetSandboxId()] = s.GetState()
	}
	return out
}

// writeFile and checkFile put a file in a sandbox and check it is still there.
func (c *crashAgent) writeFile(t *testing.T, id, content string) {
	t.Helper()
	if out, code := c.run(t, id, "echo "+content+" > /home/user/kept && sync"); code != 0 {
		t.Fatalf("write file in %s: exit %d: %s", id, code, out)
	}
}

func (c *crashAgent) checkFile(t *testing.T, id, content string) {
	t.Helper()
	if out, _ := c.run(t, id, "cat /home/user/kept"); out != content+"\n" {
		t.Errorf("file in %s after the crash: %q, want %q", id, out, content+"\n")
	}
}

// sandboxFile is a path in the sandbox's dir of the agent's data dir.
func sandboxFile(dataDir, id string, parts ...string) string {
	return filepath.Join(append([]string{dataDir, "sandboxes", id}, parts...)...)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// recordSays reports whether the sandbox's record on disk is in state st.
func recordSays(dataDir, id string, st string) bool {
	b, err := os.ReadFile(sandboxFile(dataDir, id, "sandbox.json"))
	return err == nil && strings.Contains(string(b), `"state": "`+st+`"`)
}

// waitFor polls cond every 2 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// killAt SIGKILLs the agent once at() holds, starts the next one over the same data dir and
// checks that nothing leaked.
func (c *crashAgent) killAt(t *testing.T, op, point string, at func() bool, dataDir, logDir string) *crashAgent {
	t.Helper()
	if !waitFor(time.Minute, at) {
		t.Fatalf("%s never reached %s", op, point)
	}
	c.kill()
	next := startCrashAgent(t, dataDir, logDir)
	assertNoLeaks(t, dataDir)
	return next
}

// expectResumes checks that sandbox id is paused, resumes it and checks its file.
func (c *crashAgent) expectResumes(t *testing.T, id, content string) {
	t.Helper()
	if st := c.states(t); st[id] != pb.State_STATE_PAUSED {
		t.Fatalf("after the restart %s is %v, want paused (all: %v)", id, st[id], st)
	}
	if err := c.resume(id); err != nil {
		t.Fatalf("resume %s after the crash: %v", id, err)
	}
	c.checkFile(t, id, content)
}

// TestAgentKilledDuringPause: the agent is killed with SIGKILL before, during and after the
// checkpoint of a pause. The next agent finds the sandbox paused, it resumes with its files,
// and nothing of the dead agent leaks.
func TestAgentKilledDuringPause(t *testing.T) {
	setupEnv(t)
	dataDir, logDir := t.TempDir(), t.TempDir()
	t.Cleanup(func() { cleanupCrashData(t, dataDir) })
	points := []struct {
		name string
		// at is when the agent is killed, judged from the sandbox's files.
		at func(id string) bool
	}{
		{"before-checkpoint", func(id string) bool {
			return recordSays(dataDir, id, "pausing") && !exists(sandboxFile(dataDir, id, "runtime", "snapshot.tmp"))
		}},
		{"during-checkpoint", func(id string) bool {
			return exists(sandboxFile(dataDir, id, "runtime", "snapshot.tmp", "checkpoint.img"))
		}},
		{"after-checkpoint", func(id string) bool {
			return exists(sandboxFile(dataDir, id, "runtime", "snapshot", "checkpoint.img"))
		}},
		{"after-pause", func(id string) bool { return recordSays(dataDir, id, "paused") }},
	}
	ca := startCrashAgent(t, dataDir, logDir)
	t.Cleanup(func() { ca.kill() }) // the agent of the moment
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			id := "crash-" + p.name
			ca.createSandbox(t, id)
			ca.writeFile(t, id, "kept-"+p.name)
			go ca.pause(id) // fails when the agent dies
			ca = ca.killAt(t, "the pause", p.name, func() bool { return p.at(id) }, dataDir, logDir)
			ca.expectResumes(t, id, "kept-"+p.name)
			if err := ca.pause(id); err != nil { // paused: the next point's crash keeps it
				t.Fatalf("pause again: %v", err)
			}
		})
	}
	// Every sandbox, paused by now, still resumes after the restarts that followed.
	for _, p := range points {
		id := "crash-" + p.name
		if err := ca.resume(id); err != nil {
			t.Fatalf("resume %s at the end: %v", id, err)
		}
		ca.checkFile(t, id, "kept-"+p.name)
		ca.destroy(t, id)
	}
	ca.restartClean(t, dataDir, logDir)
}

// restartClean kills and restarts the agent once more with no sandbox left, and checks that
// nothing is left on the host: runsc's shared null-netns mount lives as long as an agent has
// run a sandbox, so leaks are judged after a restart's reclaim.
func (c *crashAgent) restartClean(t *testing.T, dataDir, logDir string) {
	t.Helper()
	c.kill()
	*c = *startCrashAgent(t, dataDir, logDir)
	assertNoLeaks(t, dataDir)
	if st := c.states(t); len(st) != 0 {
		t.Errorf("sandboxes left after destroying all: %v", st)
	}
}

// TestAgentChaos is a bounded chaos run: ten cycles of SIGKILL and restart of the agent with a
// sandbox running, one paused and one in the middle of a pause (killed a little later each
// cycle, so the kill falls before, during and after its checkpoint). After every restart
// nothing leaks (netns, veth, nftables rules, cgroups, mounts, runsc processes), the running
// sandbox is gone, and both paused ones resume with their files.
func TestAgentChaos(t *testing.T) {
	setupEnv(t)
	dataDir, logDir := t.TempDir(), t.TempDir()
	t.Cleanup(func() { cleanupCrashData(t, dataDir) })
	const cycles = 10
	ca := startCrashAgent(t, dataDir, logDir)
	t.Cleanup(func() { ca.kill() }) // the agent of the moment
	const kept, mid = "chaos-paused", "chaos-mid"
	ca.createSandbox(t, kept)
	ca.writeFile(t, kept, "kept-0")
	if err := ca.pause(kept); err != nil {
		t.Fatal(err)
	}
	ca.createSandbox(t, mid)
	start := time.Now()
	for i := range cycles {
		content := fmt.Sprintf("mid-%d", i)
		ca.writeFile(t, mid, content)
		running := fmt.Sprintf("chaos-running-%d", i)
		ca.createSandbox(t, running)
		go ca.pause(mid)
		if !waitFor(time.Minute, func() bool { return recordSays(dataDir, mid, "pausing") }) {
			t.Fatalf("cycle %d: the pause never started", i)
		}
		time.Sleep(time.Duration(i) * 35 * time.Millisecond)
		ca.kill()
		ca = startCrashAgent(t, dataDir, logDir)
		assertNoLeaks(t, dataDir)
		st := ca.states(t)
		want := map[string]pb.State{kept: pb.State_STATE_PAUSED, mid: pb.State_STATE_PAUSED}
		if fmt.Sprint(st) != fmt.Sprint(want) {
			t.Fatalf("cycle %d: after the restart %v, want %v (the running sandbox gone); agent log: %s", i, st, want, tail(filepath.Join(logDir, "agent.log")))
		}
		if err := ca.resume(mid); err != nil {
			t.Fatalf("cycle %d: resume %s: %v", i, mid, err)
		}
		ca.checkFile(t, mid, content)
		if i%3 == 2 { // the long-paused one too, now and then: it went through every crash
			if err := ca.resume(kept); err != nil {
				t.Fatalf("cycle %d: resume %s: %v", i, kept, err)
			}
			ca.checkFile(t, kept, "kept-0")
			if err := ca.pause(kept); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d cycles in %v", cycles, time.Since(start).Round(time.Second))
	if err := ca.resume(kept); err != nil {
		t.Fatal(err)
	}
	ca.checkFile(t, kept, "kept-0")
	ca.destroy(t, kept)
	ca.destroy(t, mid)
	ca.restartClean(t, dataDir, logDir)
}

func (c *crashAgent) destroy(t *testing.T, id string) {
	t.Helper()
	if _, err := c.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})); err != nil {
		t.Fatalf("destroy %s: %v", id, err)
	}
}

// cleanupCrashData removes what the last agent process left (it was killed): one more agent,
// in this process, recovers the data dir, and its cleanup reclaims everything.
func cleanupCrashData(t *testing.T, dataDir string) {
	h := startAgentOn(t, setupEnv(t), dataDir, crashNet)
	h.stop()
}

var slotChainRE = regexp.MustCompile(`(egress|inspect)_[0-9]`)

// assertNoLeaks checks, while no sandbox runs, that nothing of a sandbox is left on the host:
// network namespaces, interfaces, slot rules in the agent's nftables table, cgroups, mounts
// under the data dir and runsc processes of the agent's runsc root.
func assertNoLeaks(t *testing.T, dataDir string) {
	t.Helper()
	assertNoLeftoversOf(t, crashNet.prefix, crashNet.cgroupParent) // netns, interfaces, cgroups
	if out, err := exec.Command("nft", "list", "table", "inet", crashNet.prefix).CombinedOutput(); err == nil {
		if strings.Contains(string(out), crashNet.prefix+"-") || slotChainRE.Match(out) {
			t.Errorf("slot rules left in nftables table %s:\n%s", crashNet.prefix, out)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for line := range strings.SplitSeq(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dataDir+"/") {
				t.Errorf("mount left under the data dir: %s", f[4])
			}
		}
	}
	root := filepath.Join(dataDir, "runsc")
	if out, _ := exec.Command("pgrep", "-f", "--", "--root[= ]"+root).CombinedOutput(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("runsc processes of the agent's root left: %s", out)
	}
}

// TestAgentKilledDuringResume: the agent is killed while it restores a paused sandbox,
// before and after the restore (which uses up the snapshot). The next agent finds it paused
// with a snapshot, and it resumes with its files.
func TestAgentKilledDuringResume(t *testing.T) {
	setupEnv(t)
	dataDir, logDir := t.TempDir(), t.TempDir()
	t.Cleanup(func() { cleanupCrashData(t, dataDir) })
	snapshot := func(id string) string { return sandboxFile(dataDir, id, "runtime", "snapshot", "checkpoint.img") }
	points := []struct {
		name string
		at   func(id string) bool
	}{
		{"before-restore", func(id string) bool { return recordSays(dataDir, id, "resuming") && exists(snapshot(id)) }},
		// The restore used up the snapshot; envd's /init is not done yet.
		{"after-restore", func(id string) bool { return recordSays(dataDir, id, "resuming") && !exists(snapshot(id)) }},
	}
	ca := startCrashAgent(t, dataDir, logDir)
	t.Cleanup(func() { ca.kill() })
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			id := "resume-" + p.name
			ca.createSandbox(t, id)
			ca.writeFile(t, id, "kept-"+p.name)
			if err := ca.pause(id); err != nil {
				t.Fatal(err)
			}
			go ca.resume(id) // fails when the agent dies
			ca = ca.killAt(t, "the resume", p.name, func() bool { return p.at(id) }, dataDir, logDir)
			ca.expectResumes(t, id, "kept-"+p.name)
			ca.destroy(t, id)
		})
	}
	ca.restartClean(t, dataDir, logDir)
}

// TestUnreadableRecordIsQuarantined: a paused sandbox whose record does not load (torn,
// emptied, or naming another sandbox) is moved to the quarantine dir with its snapshot and
// reported at error level, not deleted: put back with a good record, it resumes with its files.
func TestUnreadableRecordIsQuarantined(t *testing.T) {
	setupEnv(t)
	dataDir, logDir := t.TempDir(), t.TempDir()
	t.Cleanup(func() { cleanupCrashData(t, dataDir) })
	const id = "quarantine-me"
	ca := startCrashAgent(t, dataDir, logDir)
	t.Cleanup(func() { ca.kill() })
	ca.createSandbox(t, id)
	ca.writeFile(t, id, "kept")
	if err := ca.pause(id); err != nil {
		t.Fatal(err)
	}
	recPath := sandboxFile(dataDir, id, "sandbox.json")
	good, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	qdir := filepath.Join(dataDir, "sandboxes", ".quarantine")
	for _, c := range []struct {
		name string
		rec  []byte
	}{
		{"torn", good[:len(good)/2]},
		{"empty", nil},
		{"other-id", []byte(strings.Replace(string(good), `"id": "`+id+`"`, `"id": "someone-else"`, 1))},
	} {
		t.Run(c.name, func(t *testing.T) {
			ca.kill()
			if err := os.WriteFile(recPath, c.rec, 0o600); err != nil {
				t.Fatal(err)
			}
			ca = startCrashAgent(t, dataDir, logDir)
			if st := ca.states(t); len(st) != 0 {
				t.Errorf("sandboxes listed with an unreadable record: %v", st)
			}
			ents, _ := os.ReadDir(qdir)
			if len(ents) != 1 {
				t.Fatalf("quarantine holds %d entries, want 1", len(ents))
			}
			moved := filepath.Join(qdir, ents[0].Name())
			if !exists(filepath.Join(moved, "runtime", "snapshot", "checkpoint.img")) {
				t.Fatalf("the quarantined dir %s lost its snapshot", moved)
			}
			if exists(sandboxFile(dataDir, id)) {
				t.Errorf("the sandbox dir is still in place")
			}
			if log := tail(filepath.Join(logDir, "agent.log")); !strings.Contains(log, `level=ERROR msg="sandbox record unreadable; moved to quarantine with its snapshot" sandbox=`+id) {
				t.Errorf("no error line for the quarantine in the agent log: %s", log)
			}
			// The operator's way back: the dir with a good record.
			ca.kill()
			if err := os.Rename(moved, sandboxFile(dataDir, id)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(recPath, good, 0o600); err != nil {
				t.Fatal(err)
			}
			ca = startCrashAgent(t, dataDir, logDir)
			if st := ca.states(t); st[id] != pb.State_STATE_PAUSED {
				t.Fatalf("put back, the sandbox is %v, want paused", st[id])
			}
		})
	}
	if err := ca.resume(id); err != nil {
		t.Fatal(err)
	}
	ca.checkFile(t, id, "kept")
	ca.destroy(t, id)
	ca.restartClean(t, dataDir, logDir)
}
