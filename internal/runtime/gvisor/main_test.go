package gvisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/cgroups"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/runtimetest"
)

// The tests drive real runsc sandboxes booted from the real base template. They need root;
// the first run builds runsc and the template (minutes), later runs reuse both.
var (
	testEnv     *runtimetest.Env
	skipReason  string
	testRoot    = "/run/hearth-test/gvisor-runsc"
	testCgroup  = "hearth-test-gvisor"
	testTimeout = 60 * time.Second
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	env, err := runtimetest.Setup(ctx, os.Stderr)
	cancel()
	switch {
	case errors.Is(err, runtimetest.ErrUnavailable):
		skipReason = err.Error()
	case err != nil:
		fmt.Fprintln(os.Stderr, "gvisor tests: setup:", err)
		os.Exit(1)
	default:
		testEnv = env
		// Leftovers of an earlier run that crashed must not disturb this one.
		if d, err := newTestDriver(CreateRestore); err == nil {
			reclaim(d)
		}
	}
	code := m.Run()
	if testEnv != nil {
		if d, err := newTestDriver(CreateRestore); err == nil {
			reclaim(d)
		}
	}
	os.Exit(code)
}

func reclaim(d *Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Reclaim(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gvisor tests: reclaim:", err)
	}
}

func requireEnv(tb testing.TB) {
	tb.Helper()
	if testEnv == nil {
		tb.Skipf("skipping: runsc sandboxes cannot run here: %s", skipReason)
	}
}

func newTestDriver(mode CreateMode) (*Driver, error) {
	return New(Config{
		Runsc:        testEnv.Runsc,
		StateDir:     testRoot,
		SnapshotDir:  filepath.Join(testEnv.DataDir, "snapshots", "gvisor"),
		CgroupParent: testCgroup,
		CreateMode:   mode,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

func testDriver(tb testing.TB, mode CreateMode) *Driver {
	tb.Helper()
	requireEnv(tb)
	d, err := newTestDriver(mode)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// sandbox is a created test sandbox with its slot.
type sandbox struct {
	spec runtime.Spec
	slot *runtimetest.Slot
}

var sandboxSeq int

// newSpec makes a slot and a spec; the slot and whatever the driver leaves are removed when
// the test ends, pass or fail.
func newSpec(tb testing.TB, d *Driver, cpus, memMiB int) *sandbox {
	tb.Helper()
	slot, err := runtimetest.NewSlot()
	if err != nil {
		tb.Fatal(err)
	}
	sandboxSeq++
	id := fmt.Sprintf("t%d-%d", os.Getpid(), sandboxSeq)
	sb := &sandbox{slot: slot, spec: runtime.Spec{
		ID:        id,
		Dir:       filepath.Join(testEnv.DataDir, "sandboxes", id),
		Template:  testEnv.Template,
		Net:       runtime.Net{NetNS: slot.NetNSPath(), GuestIP: slot.GuestIP},
		CPUs:      cpus,
		MemoryMiB: memMiB,
	}}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, sb.spec); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		if err := slot.Close(); err != nil {
			tb.Errorf("cleanup slot: %v", err)
		}
	})
	return sb
}

// create makes a spec and creates the sandbox.
func create(tb testing.TB, d *Driver, cpus, memMiB int) *sandbox {
	tb.Helper()
	sb := newSpec(tb, d, cpus, memMiB)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Create(ctx, sb.spec); err != nil {
		tb.Fatal(err)
	}
	return sb
}

// exec runs a command in the sandbox and returns its stdout.
func execIn(tb testing.TB, d *Driver, id string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := d.runsc.output(ctx, runtime.Spec{}, append([]string{"exec", containerID(id)}, args...)...)
	if err != nil {
		tb.Fatalf("exec %v in %s: %v", args, id, err)
	}
	return strings.TrimSpace(string(out))
}

// waitForFile waits until path exists and is not empty inside sandbox id.
func waitForFile(tb testing.TB, d *Driver, id, path string) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := d.runsc.output(ctx, runtime.Spec{}, "exec", containerID(id), "test", "-s", path)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not appear in %s: %v", path, id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sandboxProcesses returns host processes of this driver's runsc root that belong to id.
func sandboxProcesses(id string) []int {
	var out []int
	for _, pid := range rootProcesses(testRoot) {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if strings.Contains(string(b), id) {
			out = append(out, pid)
		}
	}
	return out
}

// fingerprint records every path of a tree with its size, mode and mtime, to prove that
// sandboxes never write into the template.
func fingerprint(tb testing.TB, root string) map[string]string {
	tb.Helper()
	fp := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		fp[p] = fmt.Sprintf("%d %v %d", fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return fp
}

func diffFingerprints(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	return d
}

func readCgroupInt(tb testing.TB, controller, id, file string) int64 {
	tb.Helper()
	p := filepath.Join(cgroups.V1Root, controller, cgroupPath(testCgroup, id), file)
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatalf("read %s: %v", p, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatalf("parse %s: %v", p, err)
	}
	return v
}
