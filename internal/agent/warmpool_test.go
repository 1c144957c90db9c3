package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	procpb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
	"github.com/hearthsh/hearth/internal/runtime"
)

// The warm pool tests' network objects and cgroups, apart from the other agent tests'.
const (
	warmSlotPrefix   = "hwp"
	warmCgroupParent = "hearth-hwp-test"
)

var warmNet = agentNet{warmSlotPrefix, netip.MustParsePrefix("10.211.0.0/17"), warmCgroupParent}

// warmReq is a create as the control plane sends it, with everything a create configures.
func warmReq(id string, cpus uint32) *pb.CreateRequest {
	return &pb.CreateRequest{
		SandboxId: id, Template: "base", Cpus: cpus, MemoryMib: 512,
		EnvVars:         map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": id, "FOO": "bar baz"},
		EnvdAccessToken: "token-" + id,
		Metadata:        map[string]string{"owner": id},
		// Everything denied but the slot's own gateway: a dial elsewhere is refused at once.
		Egress: &pb.Egress{Deny: []string{"0.0.0.0/0"}},
	}
}

// fromPool tells a claimed sandbox from a booted one the way the host shows it: a booted
// sandbox's cgroup is named by its ID, a claimed one's by the ID it was pooled under.
func fromPool(id string) bool {
	_, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", warmCgroupParent, id))
	return os.IsNotExist(err)
}

// probe is what a process in the sandbox sees of what a create configures. The sandbox's own
// ID is replaced by "ID", so a pooled and a booted sandbox must print the same.
const probe = `echo "env: $FOO|$E2B_SANDBOX_ID|$E2B_SANDBOX"
env | grep -v -e '^_=' -e '^SHLVL=' -e '^PWD=' -e '^OLDPWD=' | sort
echo "hostname: $(hostname)"; cat /etc/hostname /etc/hosts /etc/resolv.conf 2>&1
echo "user: $(id)"; echo "cwd: $(pwd)"
echo "dial: $( (exec 3<>/dev/tcp/192.0.2.1/80) 2>&1 | sed 's/.*: //')"`

func TestWarmPool(t *testing.T) {
	env := setupEnv(t)
	dataDir := t.TempDir()
	// rebuilt, once set, makes "base" resolve to another build of it, as `hearth template
	// build` or an API build under the same name would.
	var rebuilt atomic.Bool
	h := startAgentOn(t, env, dataDir, warmNet, func(c *sandbox.Config) {
		c.WarmPool = sandbox.WarmPool{Sizes: map[string]int{"base": 2}, CPUs: 1, MemoryMiB: 512}
		resolve := c.Templates
		c.Templates = func(name string) (runtime.Template, error) {
			tpl, err := resolve(name)
			if rebuilt.Load() {
				tpl.Version += "-rebuilt"
			}
			return tpl, err
		}
	})
	defer h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := func() bool { return h.mgr.WarmReady()["base"] == 2 }
	eventually(t, 2*time.Minute, "warm pool filled", full)

	create := func(t *testing.T, req *pb.CreateRequest) *pb.Sandbox {
		t.Helper()
		res, err := h.rpc.Create(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("create %s: %v", req.SandboxId, err)
		}
		t.Cleanup(func() {
			h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: req.SandboxId}))
		})
		return res.Msg.GetSandbox()
	}
	see := func(t *testing.T, id string) string {
		t.Helper()
		out, code := h.runToken(t, id, "token-"+id, probe)
		if code != 0 {
			t.Fatalf("probe in %s: exit %d: %s", id, code, out)
		}
		return strings.ReplaceAll(out, id, "ID")
	}

	pooled := create(t, warmReq("warm-claimed", 1))
	// Two CPUs: not the pool's shape, so this create boots.
	fresh := create(t, warmReq("warm-fresh", 2))

	t.Run("a matching create claims, a mismatch boots", func(t *testing.T) {
		if !fromPool("warm-claimed") {
			t.Error("warm-claimed has a cgroup of its own: it was booted, not claimed")
		}
		if fromPool("warm-fresh") {
			t.Error("warm-fresh (2 CPUs, the pool has 1) was claimed from the pool")
		}
	})

	t.Run("a claimed sandbox is what a fresh create makes", func(t *testing.T) {
		for _, sb := range []*pb.Sandbox{pooled, fresh} {
			if sb.GetState() != pb.State_STATE_RUNNING || sb.GetMetadata()["owner"] != sb.GetSandboxId() ||
				strings.Join(sb.GetEgress().GetDeny(), ",") != "0.0.0.0/0" {
				t.Errorf("created %s: %v", sb.GetSandboxId(), sb)
			}
		}
		got, want := see(t, "warm-claimed"), see(t, "warm-fresh")
		t.Logf("claimed sandbox sees:\n%s", got)
		if got != want {
			t.Errorf("claimed sandbox sees\n%s\nfresh one sees\n%s", got, want)
		}
		for _, line := range []string{"env: bar baz|ID|true", "dial: Connection refused", "cwd: /home/user"} {
			if !strings.Contains(got, line+"\n") {
				t.Errorf("claimed sandbox's view lacks %q:\n%s", line, got)
			}
		}
	})

	t.Run("envd of a claimed sandbox requires its token", func(t *testing.T) {
		pc := processconnect.NewProcessClient(&http.Client{Transport: tokenTransport{id: "warm-claimed", token: "token-warm-fresh"}}, h.proxyURL, connect.WithProtoJSON())
		stream, err := pc.Start(ctx, connect.NewRequest(&procpb.StartRequest{Process: &procpb.ProcessConfig{Cmd: "true"}}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("another sandbox's token: %v, want unauthenticated", err)
		}
	})

	t.Run("the pool refills", func(t *testing.T) {
		eventually(t, 2*time.Minute, "warm pool refilled", full)
	})

	t.Run("a claimed sandbox pauses and resumes", func(t *testing.T) {
		h.runToken(t, "warm-claimed", "token-warm-claimed", "echo kept > /home/user/kept")
		if _, err := h.rpc.Pause(ctx, connect.NewRequest(&pb.PauseRequest{SandboxId: "warm-claimed"})); err != nil {
			t.Fatal(err)
		}
		if _, err := h.rpc.Resume(ctx, connect.NewRequest(&pb.ResumeRequest{SandboxId: "warm-claimed"})); err != nil {
			t.Fatal(err)
		}
		if out, _ := h.runToken(t, "warm-claimed", "token-warm-claimed", "cat /home/user/kept; echo $E2B_SANDBOX_ID"); out != "kept\nwarm-claimed\n" {
			t.Fatalf("after pause and resume: %q", out)
		}
		// Resumed under its own ID from now on.
		if fromPool("warm-claimed") {
			t.Error("resumed sandbox still runs under its pooled ID")
		}
	})

	// runsc takes a container ID as a prefix of one: before the driver terminated its IDs, a
	// sandbox "warm" beside pooled "warm-<hex>" ones could not be stopped (CI hung 18 minutes
	// on warm-c0 beside a pooled warm-c0…).
	t.Run("a sandbox whose ID begins the pooled ones' is destroyed alone", func(t *testing.T) {
		eventually(t, 2*time.Minute, "warm pool refilled", full)
		if _, err := h.rpc.Create(ctx, connect.NewRequest(warmReq("warm", 2))); err != nil {
			t.Fatalf("create warm: %v", err)
		}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := h.rpc.Destroy(dctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: "warm"})); err != nil {
			t.Fatalf("destroy warm: %v", err)
		}
		if !full() {
			t.Fatalf("pool after the destroy: %v, want base: 2", h.mgr.WarmReady())
		}
		create(t, warmReq("warm-after-prefix", 1))
		if out, _ := h.runToken(t, "warm-after-prefix", "token-warm-after-prefix", "echo $E2B_SANDBOX_ID"); out != "warm-after-prefix\n" {
			t.Errorf("sandbox claimed after the destroy sees %q", out)
		}
	})

	t.Run("concurrent creates each get a sandbox of their own", func(t *testing.T) {
		eventually(t, 2*time.Minute, "warm pool refilled", full)
		var wg sync.WaitGroup
		ids := []string{"warm-c0", "warm-c1", "warm-c2", "warm-c3"}
		errs := make([]error, len(ids))
		for i, id := range ids {
			t.Cleanup(func() { h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})) })
			wg.Go(func() {
				_, errs[i] = h.rpc.Create(ctx, connect.NewRequest(warmReq(id, 1)))
			})
		}
		wg.Wait()
		claimed := 0
		for i, id := range ids {
			if errs[i] != nil {
				t.Fatalf("create %s: %v", id, errs[i])
			}
			if fromPool(id) {
				claimed++
			}
			if out, _ := h.runToken(t, id, "token-"+id, "echo $E2B_SANDBOX_ID; cat /home/user/kept 2>/dev/null"); out != id+"\n" {
				t.Errorf("%s sees %q", id, out)
			}
		}
		if claimed == 0 || claimed > 2 {
			t.Errorf("%d of 4 concurrent creates claimed from a pool of 2", claimed)
		}
	})

	t.Run("a create after a rebuild never gets a sandbox of the older build", func(t *testing.T) {
		eventually(t, 2*time.Minute, "warm pool refilled", full)
		pooledDirs := func() []string {
			ents, _ := os.ReadDir(filepath.Join(dataDir, "sandboxes", ".warm"))
			return names(ents)
		}
		older := pooledDirs()
		rebuilt.Store(true)
		create(t, warmReq("warm-rebuilt", 1))
		if fromPool("warm-rebuilt") {
			t.Fatal("a create of the rebuilt template claimed a sandbox booted from the older build")
		}
		// The older build's pooled sandboxes are dropped and the pool refills from the new one.
		eventually(t, 2*time.Minute, "warm pool refilled from the rebuilt template", func() bool {
			return full() && !slices.ContainsFunc(pooledDirs(), func(d string) bool { return slices.Contains(older, d) })
		})
		create(t, warmReq("warm-rebuilt-claimed", 1))
		if !fromPool("warm-rebuilt-claimed") {
			t.Error("the pool refilled from the rebuilt template, yet a create of it booted")
		}
	})

	t.Run("kill and shutdown leave nothing", func(t *testing.T) {
		for _, id := range []string{"warm-claimed", "warm-fresh"} { // the later ones are gone with their subtests
			if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id})); err != nil {
				t.Errorf("destroy %s: %v", id, err)
			}
		}
		if n := h.mgr.WarmReady()["base"]; n == 0 {
			t.Error("the pool is empty before shutdown: nothing to clean")
		}
		if err := h.mgr.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoLeftoversOf(t, warmSlotPrefix, warmCgroupParent)
		if ents, err := os.ReadDir(filepath.Join(dataDir, "sandboxes")); err != nil || len(ents) != 0 {
			t.Errorf("sandboxes dir after shutdown: %v %v", names(ents), err)
		}
		if got := h.mgr.WarmReady(); len(got) != 0 {
			t.Errorf("pool after shutdown: %v", got)
		}
	})
}

// TestWarmPoolGivesWayUnderMaxSandboxes: pooled sandboxes count towards --max-sandboxes, and
// a create that cannot claim one (another shape) still gets room: a pooled one is dropped.
func TestWarmPoolGivesWayUnderMaxSandboxes(t *testing.T) {
	env := setupEnv(t)
	h := startAgentOn(t, env, t.TempDir(), warmNet, func(c *sandbox.Config) {
		c.MaxActive = 2
		c.WarmPool = sandbox.WarmPool{Sizes: map[string]int{"base": 2}, CPUs: 1, MemoryMiB: 512}
	})
	defer h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	eventually(t, 2*time.Minute, "warm pool filled", func() bool { return h.mgr.WarmReady()["base"] == 2 })
	for _, id := range []string{"cap-a", "cap-b"} {
		if _, err := h.rpc.Create(ctx, connect.NewRequest(warmReq(id, 2))); err != nil {
			t.Fatalf("create %s with the pool holding the room: %v", id, err)
		}
		t.Cleanup(func() { h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})) })
	}
	eventually(t, 30*time.Second, "pool gave way", func() bool { return h.mgr.WarmReady()["base"] == 0 })
	_, err := h.rpc.Create(ctx, connect.NewRequest(warmReq("cap-c", 1)))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("third create at the cap: %v, want ResourceExhausted", err)
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestAgentKilledWithWarmPool: an agent killed (SIGKILL) with a full pool and a claimed
// sandbox leaves nothing the next start does not remove: no pooled sandbox, dir, netns,
// interface or cgroup survives it.
func TestAgentKilledWithWarmPool(t *testing.T) {
	setupEnv(t)
	dataDir, logDir := t.TempDir(), t.TempDir()
	ca := startCrashAgent(t, dataDir, logDir, crashAgentWarmEnv+"=base=2")
	defer ca.kill()
	warmRoot := filepath.Join(dataDir, "sandboxes", ".warm")
	booted := func() int {
		ents, _ := os.ReadDir(warmRoot)
		n := 0
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(warmRoot, e.Name(), "runtime", "envd", "envd.sock")); err == nil {
				n++
			}
		}
		return n
	}
	eventually(t, 2*time.Minute, "two pooled sandboxes booted", func() bool { return booted() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := ca.rpc.Create(ctx, connect.NewRequest(warmReq("warm-crash", 1))); err != nil {
		t.Fatal(err)
	}
	if !fromPool("warm-crash") {
		t.Fatal("warm-crash was booted, not claimed")
	}
	eventually(t, 2*time.Minute, "pool refilled", func() bool { return booted() == 2 })
	ca.kill()

	h := startAgentOn(t, setupEnv(t), dataDir, warmNet) // no pool: only the recovery
	defer h.stop()
	if _, err := os.Stat(warmRoot); !os.IsNotExist(err) {
		t.Errorf("warm pool dir after the restart: %v", err)
	}
	if _, err := h.rpc.Get(ctx, connect.NewRequest(&pb.GetRequest{SandboxId: "warm-crash"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("claimed sandbox that was running when the agent died: %v, want not found", err)
	}
	assertNoLeftoversOf(t, warmSlotPrefix, warmCgroupParent)
}

// TestWarmPoolFollowsControlPlaneRefs: a pool entry that names a control plane's template
// (here my-tpl, as a heartbeat's answer resolves it) pools nothing until answered, then the
// version and shape the answer names, fetched first when the host lacks it; a create of that
// version and shape (what the control plane asks for) claims one; an answer naming another
// build moves the pool to it; an error pools nothing; a deleted version's pooled sandboxes go
// at once and a late answer naming it is not followed. The host's own template (base) is
// pooled as before, beside it.
func TestWarmPoolFollowsControlPlaneRefs(t *testing.T) {
	env := setupEnv(t)
	dataDir := t.TempDir()
	const (
		v1 = "tpl1-0b7a1c3e-2f4d-4e5a-9b6c-7d8e9f0a1b01"
		v2 = "tpl1-0b7a1c3e-2f4d-4e5a-9b6c-7d8e9f0a1b02"
		v3 = "tpl1-0b7a1c3e-2f4d-4e5a-9b6c-7d8e9f0a1b03" // on this host only once fetched
	)
	var (
		mu      sync.Mutex
		fetched []string // "name artifact"
	)
	h := startAgentOn(t, env, dataDir, warmNet, func(c *sandbox.Config) {
		c.WarmPool = sandbox.WarmPool{Sizes: map[string]int{"base": 1, "my-tpl": 2}, CPUs: 1, MemoryMiB: 512, ControlPlane: true}
		c.Templates = func(name string) (runtime.Template, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case name == "base":
				return env.Template, nil
			case name == v1 || name == v2 || (name == v3 && slices.Contains(fetched, v3+" sha256:v3")):
				tpl := env.Template // each version a build of its own
				tpl.Name, tpl.Version = name, env.Template.Version+"-"+name
				return tpl, nil
			}
			return runtime.Template{}, fmt.Errorf("template %q is not built", name)
		}
		c.FetchTemplate = func(ctx context.Context, name, manifest string) error {
			mu.Lock()
			defer mu.Unlock()
			fetched = append(fetched, name+" "+manifest)
			return nil
		}
	})
	defer h.stop()
	h.agent.EnableTemplateBuilds(dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ready := func(name string) int { return h.mgr.WarmReady()[name] }
	pooledDirs := func() []string {
		ents, _ := os.ReadDir(filepath.Join(dataDir, "sandboxes", ".warm"))
		return names(ents)
	}
	answer := func(at time.Time, t sandbox.WarmTarget) {
		h.mgr.SetWarmTargets(at, []string{"my-tpl"}, map[string]sandbox.WarmTarget{"my-tpl": t})
	}
	create := func(t *testing.T, id, tpl string, cpus, mem uint32) {
		t.Helper()
		req := warmReq(id, cpus)
		req.Template, req.MemoryMib = tpl, mem
		if _, err := h.rpc.Create(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("create %s of %s: %v", id, tpl, err)
		}
		t.Cleanup(func() { h.rpc.Destroy(context.Background(), connect.NewRequest(&pb.DestroyRequest{SandboxId: id})) })
	}

	if got := h.mgr.WarmRefs(); !slices.Equal(got, []string{"my-tpl"}) {
		t.Fatalf("refs for the control plane: %v, want [my-tpl] (base is this host's)", got)
	}
	eventually(t, 2*time.Minute, "base pooled", func() bool { return ready("base") == 1 })
	if got := h.mgr.WarmReady(); len(got) != 1 {
		t.Fatalf("pool before any answer: %v, want base only", got)
	}

	answer(time.Now(), sandbox.WarmTarget{Template: v1, BuildID: "b1", CPUs: 1, MemoryMiB: 1024})
	eventually(t, 3*time.Minute, "my-tpl's default build pooled", func() bool { return ready(v1) == 2 })
	// The control plane's create of my-tpl asks for its build's version and shape.
	create(t, "ref-claimed", v1, 1, 1024)
	if !fromPool("ref-claimed") {
		t.Error("a create of the resolved version and shape booted instead of claiming")
	}
	// The pool's flags' shape is not the build's: that create boots.
	create(t, "ref-other-shape", v1, 1, 512)
	if fromPool("ref-other-shape") {
		t.Error("a create of another shape claimed a sandbox pooled for the build's")
	}
	eventually(t, 2*time.Minute, "refilled", func() bool { return ready(v1) == 2 })

	// The tag moves: the pool drops v1's and boots v2's.
	older := pooledDirs()
	answer(time.Now(), sandbox.WarmTarget{Template: v2, BuildID: "b2", CPUs: 1, MemoryMiB: 1024})
	eventually(t, 3*time.Minute, "the pool moved to the new build", func() bool {
		return ready(v2) == 2 && ready(v1) == 0 && ready("base") == 1 && len(pooledDirs()) == 3
	})
	create(t, "ref-moved", v2, 1, 1024)
	if !fromPool("ref-moved") {
		t.Error("a create of the new build booted instead of claiming")
	}
	// Only base's sandbox is left of what was pooled before the move.
	if n := len(slices.DeleteFunc(pooledDirs(), func(d string) bool { return !slices.Contains(older, d) })); n != 1 {
		t.Errorf("%d sandboxes pooled before the move are still pooled, want base's 1", n)
	}

	// A version this host lacks is fetched by its artifact first.
	answer(time.Now(), sandbox.WarmTarget{Template: v3, Artifact: "sha256:v3", CPUs: 1, MemoryMiB: 1024})
	eventually(t, 3*time.Minute, "the fetched version pooled", func() bool { return ready(v3) == 2 && ready(v2) == 0 })
	mu.Lock()
	if !slices.Contains(fetched, v3+" sha256:v3") {
		t.Errorf("fetches: %v, want %s by its artifact", fetched, v3)
	}
	mu.Unlock()

	// A ref that resolves to nothing pools nothing.
	answer(time.Now(), sandbox.WarmTarget{Err: `tag "default" of template "my-tpl" not found`})
	eventually(t, time.Minute, "the pool emptied for the unresolved ref", func() bool { return ready(v3) == 0 && len(h.mgr.WarmReady()) == 1 })

	// A deleted version's pooled sandboxes go with it, at once.
	answer(time.Now(), sandbox.WarmTarget{Template: v2, BuildID: "b2", CPUs: 1, MemoryMiB: 1024})
	eventually(t, 3*time.Minute, "v2 pooled again", func() bool { return ready(v2) == 2 })
	// The control plane deletes only versions no sandbox uses (and so does the agent).
	if _, err := h.rpc.Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: "ref-moved"})); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if _, err := h.rpc.DeleteTemplate(ctx, connect.NewRequest(&pb.DeleteTemplateRequest{Template: v2})); err != nil {
		t.Fatalf("delete %s: %v", v2, err)
	}
	if n := ready(v2); n != 0 || len(pooledDirs()) != 1 {
		t.Fatalf("after the delete: %d pooled of %s, dirs %v", n, v2, pooledDirs())
	}
	// An answer to a heartbeat built before the delete still names it: not followed.
	answer(before, sandbox.WarmTarget{Template: v2, BuildID: "b2", CPUs: 1, MemoryMiB: 1024})
	time.Sleep(3 * time.Second)
	if n := ready(v2); n != 0 {
		t.Fatalf("the pool booted %d of the deleted version from a stale answer", n)
	}
	assertPooledOnly(t, h, dataDir, "base")
}

// assertPooledOnly checks that the pool holds sandboxes of these templates only, and that
// its dir holds no more sandboxes than the pool counts.
func assertPooledOnly(t *testing.T, h *harness, dataDir string, templates ...string) {
	t.Helper()
	n := 0
	for name, c := range h.mgr.WarmReady() {
		if !slices.Contains(templates, name) {
			t.Errorf("pooled: %d of %s", c, name)
		}
		n += c
	}
	ents, _ := os.ReadDir(filepath.Join(dataDir, "sandboxes", ".warm"))
	if len(ents) != n {
		t.Errorf("%d pooled sandbox dirs, the pool counts %d", len(ents), n)
	}
}
