package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

func TestCreateBootsWithSpecResources(t *testing.T) {
	d := testDriver(t, Config{})
	cases := []struct {
		cpus, memMiB int
	}{
		{1, 384},
		{2, 640},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%dcpu-%dMiB", c.cpus, c.memMiB), func(t *testing.T) {
			start := time.Now()
			sb := create(t, d, c.cpus, c.memMiB)
			t.Logf("boot to envd ready: %v", time.Since(start).Round(time.Millisecond))
			envdHealthy(t, sb)
			out := envdRun(t, sb, "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; hostname; id -u user; mount | grep -c ' on /tmp type tmpfs'")
			f := strings.Fields(out)
			if len(f) != 5 {
				t.Fatalf("unexpected output %q", out)
			}
			if f[0] != strconv.Itoa(c.cpus) {
				t.Errorf("guest sees %s CPUs, want %d", f[0], c.cpus)
			}
			// MemTotal is RAM less what the kernel reserves for itself.
			if kb, _ := strconv.Atoi(f[1]); kb > c.memMiB<<10 || kb < (c.memMiB-96)<<10 {
				t.Errorf("guest MemTotal %d KiB, want a little under %d MiB", kb, c.memMiB)
			}
			if f[2] != sb.spec.ID {
				t.Errorf("hostname %q, want %q", f[2], sb.spec.ID)
			}
			if f[3] != "1000" || f[4] != "1" {
				t.Errorf("user uid %s, /tmp tmpfs mounts %s; want 1000 and 1", f[3], f[4])
			}
		})
	}
}

func TestSandboxesDoNotSeeEachOthersWrites(t *testing.T) {
	d := testDriver(t, Config{})
	a := create(t, d, 1, testMemMiB)
	image := microvm.ImagePath(filepath.Join(testVMDir, "images"), testEnv.Template, 0)
	before := fileHash(t, image)
	b := create(t, d, 1, testMemMiB)
	envdRun(t, a, "echo from-a > /root/marker && echo a > /etc/only-a && rm /etc/debian_version && sync")
	envdRun(t, b, "echo from-b > /root/marker && sync")
	if got := trim(envdRun(t, a, "cat /root/marker")); got != "from-a" {
		t.Errorf("a reads its marker as %q", got)
	}
	if got := trim(envdRun(t, b, "cat /root/marker")); got != "from-b" {
		t.Errorf("b reads its marker as %q, want its own write", got)
	}
	probe := "for f in /etc/only-a /etc/debian_version; do test -e $f && echo yes || echo no; done"
	if got, want := trim(envdRun(t, b, probe)), "no\nyes"; got != want {
		t.Errorf("b sees a's changes: only-a, debian_version exist = %q, want %q", got, want)
	}
	if got, want := trim(envdRun(t, a, probe)), "yes\nno"; got != want {
		t.Errorf("a's own changes: only-a, debian_version exist = %q, want %q", got, want)
	}
	if after := fileHash(t, image); after != before {
		t.Errorf("template image changed while sandboxes wrote")
	}
}

// fileHash fingerprints a file by what any write changes: size, allocation, mtime and ctime
// (hashing the 4 GiB sparse image would take most of a minute on a shared host).
func fileHash(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d %d %v %v", st.Size, st.Blocks, st.Mtim, st.Ctim)
}

// TestPauseResume checks what a user relies on across pause and resume: files and a running
// process survive, the vCPUs were really frozen (the guest's monotonic clock did not advance
// while paused), the balloon was inflated before the snapshot, no QEMU runs while paused, and
// the wall clock is right again once /init sets it.
func TestPauseResume(t *testing.T) {
	d := testDriver(t, Config{})
	sb := create(t, d, 1, testMemMiB)
	envdRun(t, sb, "echo keep-me > /home/user/note")
	// A background job, detached from the starting shell, writing the guest's uptime (a
	// monotonic clock that only advances while the vCPUs run) ten times a second.
	envdRun(t, sb, "(while :; do cut -d' ' -f1 /proc/uptime > /home/user/up.tmp; mv /home/user/up.tmp /home/user/up; sleep 0.1; done) >/dev/null 2>&1 &")
	uptime := func() float64 {
		t.Helper()
		s := trim(envdRun(t, sb, "cat /home/user/up"))
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("uptime %q: %v", s, err)
		}
		return v
	}
	time.Sleep(500 * time.Millisecond)
	const idle = 4 * time.Second
	for cycle := 1; cycle <= 2; cycle++ {
		guestDropCaches(t, sb)
		before := uptime()
		pausedAt := time.Now()
		pause(t, d, sb)
		if p := qemuProcesses(d, sb.spec.ID); len(p) > 0 {
			t.Errorf("cycle %d: QEMU still running while paused: %v", cycle, p)
		}
		sc := readSnapConf(t, sb)
		if sc.StatusBefore != "paused" {
			t.Errorf("cycle %d: VM status when the state was saved = %q, want paused (vCPUs stopped)", cycle, sc.StatusBefore)
		}
		if sc.BalloonError != "" || sc.Balloon.Skipped != "" || sc.Balloon.After >= sc.Balloon.Before-(64<<20) {
			t.Errorf("cycle %d: balloon not inflated before the snapshot: %+v (err %q)", cycle, sc.Balloon, sc.BalloonError)
		}
		t.Logf("cycle %d: balloon %d → %d MiB (guest free %d MiB) in %v; save %d ms; state %d KiB, mem %d MiB allocated",
			cycle, sc.Balloon.Before>>20, sc.Balloon.After>>20, sc.Balloon.Free>>20, sc.Balloon.Took.Round(time.Millisecond),
			sc.SaveMillis, allocated(t, filepath.Join(sb.spec.Dir, snapshotDir, stateFile))>>10,
			allocated(t, filepath.Join(sb.spec.Dir, snapshotDir, memFile))>>20)
		time.Sleep(idle)
		start := time.Now()
		resume(t, d, sb)
		t.Logf("cycle %d: resume to envd ready: %v", cycle, time.Since(start).Round(time.Millisecond))
		wall := time.Since(pausedAt).Seconds()
		after := uptime()
		if ran := after - before; ran < 0 || ran > wall-idle.Seconds()+0.5 {
			t.Errorf("cycle %d: guest uptime advanced %.2f s across a pause of %.2f s wall (%v idle): vCPUs not frozen", cycle, ran, wall, idle)
		}
		if got := trim(envdRun(t, sb, "cat /home/user/note")); got != "keep-me" {
			t.Errorf("cycle %d: file after resume = %q", cycle, got)
		}
		time.Sleep(600 * time.Millisecond)
		if later := uptime(); later <= after {
			t.Errorf("cycle %d: uptime stuck at %.2f after resume: the background job does not run", cycle, later)
		}
		// The guest's wall clock lags by the paused time until /init sets it.
		skew := func() float64 {
			out := trim(envdRun(t, sb, "date +%s.%N"))
			g, err := strconv.ParseFloat(out, 64)
			if err != nil {
				t.Fatalf("guest date %q: %v", out, err)
			}
			return float64(time.Now().UnixNano())/1e9 - g
		}
		if lag := skew(); lag < idle.Seconds()-1 {
			t.Errorf("cycle %d: guest clock lags only %.2f s before /init; expected the paused time", cycle, lag)
		}
		envdInit(t, sb)
		if lag := skew(); lag > 1 || lag < -1 {
			t.Errorf("cycle %d: guest clock off by %.2f s after /init", cycle, lag)
		}
		if _, err := os.Stat(filepath.Join(sb.spec.Dir, snapshotDir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cycle %d: used snapshot still there (err %v)", cycle, err)
		}
	}
}

// TestSnapshotSmallerWithReclaim pauses one VM twice with the same page cache: first without
// drop_caches and balloon, then with both, and compares the memory file's allocated bytes.
func TestSnapshotSmallerWithReclaim(t *testing.T) {
	d := testDriver(t, Config{NoBalloon: true})
	sb := create(t, d, 1, testMemMiB)
	// 96 MiB of page cache: a written-and-synced file, as after installing packages.
	envdRun(t, sb, "dd if=/dev/urandom of=/root/big bs=1M count=96 status=none && sync && cat /root/big > /dev/null")
	snapMem := filepath.Join(sb.spec.Dir, snapshotDir, memFile)
	snapState := filepath.Join(sb.spec.Dir, snapshotDir, stateFile)

	pause(t, d, sb)
	without, withoutState := allocated(t, snapMem), allocated(t, snapState)
	resume(t, d, sb)

	d.cfg.NoBalloon = false
	guestDropCaches(t, sb)
	pause(t, d, sb)
	with, withState := allocated(t, snapMem), allocated(t, snapState)
	sc := readSnapConf(t, sb)
	t.Logf("snapshot memory file allocated: %d MiB without reclaim, %d MiB with drop_caches + balloon (%d → %d MiB); state %d / %d KiB",
		without>>20, with>>20, sc.Balloon.Before>>20, sc.Balloon.After>>20, withoutState>>10, withState>>10)
	if with >= without-(64<<20) {
		t.Errorf("reclaim saved too little: %d MiB with, %d MiB without", with>>20, without>>20)
	}
	resume(t, d, sb)
	if got := trim(envdRun(t, sb, "stat -c %s /root/big")); got != strconv.Itoa(96<<20) {
		t.Errorf("file after two pauses has size %q", got)
	}
}

func TestDestroyLeavesNothing(t *testing.T) {
	d := testDriver(t, Config{})
	cases := []struct {
		name    string
		prepare func(t *testing.T, sb *sandbox)
	}{
		{"running", func(t *testing.T, sb *sandbox) {}},
		{"paused", func(t *testing.T, sb *sandbox) { pause(t, d, sb) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sb := create(t, d, 1, 256)
			c.prepare(t, sb)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := d.Destroy(ctx, sb.spec); err != nil {
				t.Fatal(err)
			}
			if p := qemuProcesses(d, sb.spec.ID); len(p) > 0 {
				t.Errorf("QEMU left after destroy: %v", p)
			}
			for _, p := range []string{sb.spec.Dir, d.pidFile(sb.spec.ID)} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still there: %v", p, err)
				}
			}
			if err := d.Destroy(ctx, sb.spec); err != nil {
				t.Errorf("second destroy: %v", err)
			}
		})
	}
}

// TestReclaimKillsLeftoverVMs stands a fresh driver in for a restarted agent: it finds the
// VMs the previous one started by their marker, kills them, and keeps paused snapshots.
func TestReclaimKillsLeftoverVMs(t *testing.T) {
	d := testDriver(t, Config{})
	running := create(t, d, 1, 256)
	paused := create(t, d, 1, 256)
	pause(t, d, paused)
	if len(qemuProcesses(d, running.spec.ID)) != 1 {
		t.Fatal("expected one QEMU process for the running sandbox")
	}
	restarted := testDriver(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := restarted.Reclaim(ctx); err != nil {
		t.Fatal(err)
	}
	if p := qemuProcesses(d, running.spec.ID); len(p) > 0 {
		t.Errorf("QEMU left after reclaim: %v", p)
	}
	if ents, _ := os.ReadDir(runDir(testVMDir)); len(ents) > 0 {
		t.Errorf("pid files left after reclaim: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(paused.spec.Dir, snapshotDir, stateFile)); err != nil {
		t.Errorf("reclaim removed a paused sandbox's snapshot: %v", err)
	}
	// The paused sandbox still resumes under the new driver.
	if err := restarted.Resume(ctx, paused.spec); err != nil {
		t.Fatal(err)
	}
	envdHealthy(t, paused)
	if err := restarted.Destroy(ctx, paused.spec); err != nil {
		t.Fatal(err)
	}
}

// A deleted template version's images go with DropTemplate (the agent's DeleteTemplate);
// the images of other templates, the one the other tests boot among them, stay.
func TestDropTemplateRemovesImages(t *testing.T) {
	d := testDriver(t, Config{})
	ctx := context.Background()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl := runtime.Template{Name: fmt.Sprintf("drop-%d", os.Getpid()), Version: "v1-00", RootFS: root}
	img, err := microvm.EnsureImage(ctx, microvm.ImageOptions{Dir: filepath.Join(testVMDir, "images"), MinSizeMiB: 16}, tpl)
	if err != nil {
		t.Fatal(err)
	}
	shared := microvm.ImagePath(filepath.Join(testVMDir, "images"), testEnv.Template, 0)
	_, sharedErr := os.Stat(shared)
	if err := d.DropTemplate(ctx, tpl.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image of the dropped template still there: %v", err)
	}
	if _, err := os.Stat(shared); sharedErr == nil && err != nil {
		t.Errorf("dropping %s took the shared template's image: %v", tpl.Name, err)
	}
}
