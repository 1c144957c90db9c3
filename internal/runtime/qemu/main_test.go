package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/procs"

	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/microvm"
	"github.com/hearthsh/hearth/internal/runtime/runtimetest"
)

// The tests boot real microVMs under QEMU (TCG on hosts without a working KVM) from the real
// base template and Debian's cloud kernel. They need root; the first run fetches the kernel
// and builds the template's ext4 image (seconds), later runs reuse both.
var (
	testEnv    *runtimetest.Env
	testPool   *runtimetest.VMPool
	testVMDir  string
	skipReason string
	// testTimeout bounds one boot, pause or resume: TCG on a shared 2-core host.
	testTimeout = 90 * time.Second
)

const (
	testPrefix = "hqt"
	testMemMiB = 512
)

var testCIDR = netip.MustParsePrefix("10.240.0.0/16")

func TestMain(m *testing.M) {
	code := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		if err := setupTests(ctx); err != nil {
			if os.Getenv("HEARTH_REQUIRE_RUNTIME") == "" && errors.Is(err, runtimetest.ErrUnavailable) {
				skipReason = err.Error()
				return m.Run()
			}
			fmt.Fprintln(os.Stderr, "qemu tests: setup:", err)
			return 1
		}
		defer func() {
			if d, err := newTestDriver(Config{}); err == nil {
				reclaim(d)
			}
			if err := testPool.Close(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "qemu tests: slots:", err)
			}
		}()
		return m.Run()
	}()
	os.Exit(code)
}

// setupTests prepares the template, the kernel and the slot pool. Missing QEMU or a kernel
// that cannot be fetched is ErrUnavailable: tests skip, or fail with HEARTH_REQUIRE_RUNTIME.
func setupTests(ctx context.Context) error {
	env, err := runtimetest.Setup(ctx, os.Stderr)
	if err != nil {
		return err
	}
	testVMDir = filepath.Join(env.DataDir, "vm")
	for _, bin := range []string{"qemu-system-x86_64", "qemu-img", "mkfs.ext4", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not installed (apt-get install qemu-system-x86 qemu-utils busybox-static e2fsprogs)", runtimetest.ErrUnavailable, bin)
		}
	}
	testEnv = env
	d, err := newTestDriver(Config{})
	if err != nil {
		testEnv = nil
		return fmt.Errorf("%w: %v", runtimetest.ErrUnavailable, err)
	}
	if err := d.Prepare(ctx); err != nil {
		testEnv = nil
		return fmt.Errorf("%w: %v", runtimetest.ErrUnavailable, err)
	}
	reclaim(d) // leftovers of an earlier run that crashed
	if testPool, err = runtimetest.NewVMPool(ctx, testPrefix, testCIDR); err != nil {
		testEnv = nil
		return err
	}
	return nil
}

func reclaim(d *Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Reclaim(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "qemu tests: reclaim:", err)
	}
}

func newTestDriver(cfg Config) (*Driver, error) {
	cfg.DataDir = testVMDir
	cfg.Accel = AccelTCG // the auto probe has its own test
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return New(cfg)
}

func testDriver(tb testing.TB, cfg Config) *Driver {
	tb.Helper()
	if testEnv == nil {
		tb.Skipf("skipping: QEMU microVMs cannot run here: %s", skipReason)
	}
	d, err := newTestDriver(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// sandbox is a test sandbox with its slot.
type sandbox struct {
	spec runtime.Spec
	slot *netslot.Slot
}

var sandboxSeq atomic.Int32

// newSpec acquires a TAP slot and makes a spec; the sandbox and the slot are removed when
// the test ends, pass or fail.
func newSpec(tb testing.TB, d *Driver, cpus, memMiB int) *sandbox {
	tb.Helper()
	id := fmt.Sprintf("q%d-%d", os.Getpid(), sandboxSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slot, err := testPool.Acquire(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	sb := &sandbox{slot: slot, spec: runtime.Spec{
		ID:        id,
		Dir:       filepath.Join(testEnv.DataDir, "sandboxes", id),
		Template:  testEnv.Template,
		Net:       runtime.Net{NetNS: slot.NetnsPath, GuestIP: slot.GuestAddr},
		CPUs:      cpus,
		MemoryMiB: memMiB,
	}}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, sb.spec); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		if err := testPool.Release(ctx, slot); err != nil {
			tb.Errorf("cleanup slot: %v", err)
		}
	})
	return sb
}

// create makes a spec and boots the sandbox.
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

func pause(tb testing.TB, d *Driver, sb *sandbox) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Pause(ctx, sb.spec); err != nil {
		tb.Fatal(err)
	}
}

func resume(tb testing.TB, d *Driver, sb *sandbox) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := d.Resume(ctx, sb.spec); err != nil {
		tb.Fatal(err)
	}
}

// qemuProcesses lists the QEMU processes of sandbox id, found by the driver's marker.
func qemuProcesses(d *Driver, id string) []int {
	pf := d.pidFile(id)
	return procs.Find(func(a []string) bool { return procs.HasArg(a, "-pidfile", pf) })
}

// readSnapConf reads the paused sandbox's snapshot record.
func readSnapConf(tb testing.TB, sb *sandbox) snapConf {
	tb.Helper()
	var c snapConf
	if err := readJSON(filepath.Join(sb.spec.Dir, snapshotDir, vmConfFile), &c); err != nil {
		tb.Fatal(err)
	}
	return c
}

func allocated(tb testing.TB, path string) int64 {
	tb.Helper()
	n, err := microvm.AllocatedBytes(path)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func trim(s string) string { return strings.TrimSpace(s) }
