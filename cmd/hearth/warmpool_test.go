package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// The warm pool refs test's network slots and data dir, apart from the other tests'.
const (
	warmRefSlotPrefix = "hwq"
	warmRefPool       = "10.216.0.0/16"
)

// TestWarmPoolFollowsDefaultTag: `hearth dev --warm-pool wq-tpl=2`, where wq-tpl is a
// template built through the API, pools nothing while the template does not exist, then its
// default build once built; a create of the bare name claims a pooled sandbox of that build;
// a rebuild (the default tag moves) moves the pool to the new build, whose creates claim.
func TestWarmPoolFollowsDefaultTag(t *testing.T) {
	logPath := devEnvWith(t, devSetup{data: "warm-ref-test", prefix: warmRefSlotPrefix, pool: warmRefPool, warmPool: "wq-tpl=2"})
	devLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	waitLog := func(what string, re *regexp.Regexp, n int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for len(re.FindAllString(devLog(), -1)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the log has %d of %d lines matching %s", what, len(re.FindAllString(devLog(), -1)), n, re)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The control plane answers that there is no such template yet, and it is logged once,
	// not at every heartbeat.
	unknown := regexp.MustCompile(`msg="warm pool: ref resolves to nothing to boot; pooling none for it" ref=wq-tpl err="template \\"wq-tpl\\" not found"`)
	waitLog("unknown ref reported", unknown, 1)
	time.Sleep(12 * time.Second) // two more heartbeats
	if n := len(unknown.FindAllString(devLog(), -1)); n != 1 {
		t.Errorf("the unknown ref was logged %d times, want once", n)
	}

	build := func(version string) string {
		t.Helper()
		r := runCLI(t, "", "template", "build", "wq-tpl", "--from", "base", "--run", "echo "+version+" > /opt/wq-version", "--json")
		r.expect(t, 0, `"status": "ready"`, "")
		var st hearth.TemplateBuildStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.TemplateID == "" || st.BuildID == "" {
			t.Fatalf("--json output %q: %v", r.stdout, err)
		}
		return st.TemplateID + "-" + st.BuildID // the name the agent keeps the version under
	}
	// create makes a sandbox of the bare name (tag default) and says whether it was claimed
	// from the pool, and of which version, as the host shows it: a claimed sandbox's cgroup is
	// named by the ID it was pooled under, and the agent logs the claim with the version.
	create := func(wantVersion, wantFile string) {
		t.Helper()
		r := runCLI(t, "", "sandbox", "create", "--template", "wq-tpl", "--timeout", "2m")
		r.expect(t, 0, "", "")
		id := strings.TrimSpace(r.stdout)
		t.Cleanup(func() { runCLI(t, "", "sandbox", "kill", id) })
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", "hearth-"+warmRefSlotPrefix, id)); !os.IsNotExist(err) {
			t.Errorf("sandbox %s has a cgroup of its own (%v): it was booted, not claimed", id, err)
		}
		claim := regexp.MustCompile(`msg="warm pool: sandbox claimed" sandbox=` + id + ` template=(\S+)`)
		waitLog("claim of "+id+" logged", claim, 1)
		if got := claim.FindStringSubmatch(devLog())[1]; got != wantVersion {
			t.Errorf("sandbox %s was claimed from the pool of %s, want %s", id, got, wantVersion)
		}
		r = runCLI(t, "", "sandbox", "exec", id, "--", "cat", "/opt/wq-version")
		if r.code != 0 || r.stdout != wantFile+"\n" {
			t.Errorf("in %s, /opt/wq-version: %q (exit %d, %s), want %q", id, r.stdout, r.code, r.stderr, wantFile)
		}
	}
	filled := func(version string, n int) {
		t.Helper()
		waitLog("pool of "+version+" filled", regexp.MustCompile(`msg="warm pool: sandbox ready" template=`+version+` refs=\[wq-tpl\] \S+ ready=2 of=2`), n)
	}

	v1 := build("one")
	filled(v1, 1)
	create(v1, "one")
	filled(v1, 2) // refilled

	v2 := build("two")
	waitLog("the ref follows the default tag", regexp.MustCompile(`msg="warm pool: ref resolved" ref=wq-tpl template=`+v2), 1)
	filled(v2, 1)
	// Both of v1's pooled sandboxes are gone: none is left for a create to get.
	waitLog("v1's pooled sandboxes dropped", regexp.MustCompile(`msg="warm pool: dropping sandbox the pool no longer wants \(its ref moved to another build or shape\)" template=`+v1), 2)
	create(v2, "two")
}
