package microvm

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/runtime"
)

func TestKernelCmdline(t *testing.T) {
	cases := []struct {
		name string
		g    GuestConfig
		want []string
		bad  bool
	}{
		{"defaults", GuestConfig{TSCKHz: 2445000}, []string{"tsc_early_khz=2445000", "tsc=reliable", "hearth.ip=169.254.0.2/30", "hearth.gw=169.254.0.1", "hearth.hostname=sandbox", "init_on_alloc=0"}, false},
		{"hostname and dns", GuestConfig{TSCKHz: 1000, Hostname: "sbx-1", DNS: nil, Extra: []string{"reboot=k"}}, []string{"hearth.hostname=sbx-1", "reboot=k"}, false},
		{"blank hostname", GuestConfig{TSCKHz: 1000, Hostname: "a b"}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := KernelCmdline(c.g)
			if (err != nil) != c.bad {
				t.Fatalf("err = %v, want error %v", err, c.bad)
			}
			fields := strings.Fields(got)
			for _, w := range c.want {
				found := false
				for _, f := range fields {
					found = found || f == w
				}
				if !found {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}

func TestHostTSCKHz(t *testing.T) {
	khz, err := HostTSCKHz()
	if err != nil {
		t.Skipf("no TSC frequency on this host: %v", err)
	}
	if khz < 100_000 || khz > 10_000_000 {
		t.Errorf("TSC %d kHz is implausible", khz)
	}
}

// TestCloneFileKeepsHolesAndData copies a sparse file: same bytes, holes stay holes, and
// writes to the copy never reach the source.
func TestCloneFileKeepsHolesAndData(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("hearth"), 100_000)
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 100 << 20, 256<<20 - int64(len(data))} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CloneFile(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the source")
	}
	if n, _ := AllocatedBytes(dst); n > 16<<20 {
		t.Errorf("copy of a 256 MiB file with 2 MiB of data allocates %d MiB: holes were filled", n>>20)
	}
	w, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	w.WriteAt([]byte("changed"), 0)
	w.Close()
	if a2, _ := os.ReadFile(src); !bytes.Equal(a2, a) {
		t.Error("a write to the copy reached the source")
	}
	if err := CloneFile(context.Background(), src, dst); err == nil {
		t.Error("CloneFile over an existing file succeeded")
	}
}

// TestInitramfsUnpacks checks the cpio writer against busybox's reader (the format the
// kernel unpacks).
func TestInitramfsUnpacks(t *testing.T) {
	bb := "/bin/busybox"
	if err := checkStatic(bb); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	mod := filepath.Join(dir, "virtio_x.ko")
	os.WriteFile(mod, []byte("module bytes"), 0o644)
	img := filepath.Join(dir, "initrd.cpio")
	if err := writeInitramfs(img, bb, []string{mod}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "sh", "-c", "cpio -t < "+img).CombinedOutput()
	if err != nil {
		t.Fatalf("busybox cpio -t: %v: %s", err, out)
	}
	for _, want := range []string{"init", "bin/busybox", "dev/console", "lib/modules/virtio_x.ko", "lib/modules/order"} {
		if !strings.Contains("\n"+string(out), "\n"+want+"\n") {
			t.Errorf("initramfs lacks %s; has:\n%s", want, out)
		}
	}
	x := filepath.Join(dir, "x")
	os.Mkdir(x, 0o755)
	cmd := exec.Command(bb, "sh", "-c", "cpio -i -d < "+img)
	cmd.Dir = x
	if out, err := cmd.CombinedOutput(); err != nil && os.Geteuid() == 0 {
		t.Fatalf("unpack: %v: %s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(x, "lib/modules/order")); string(got) != "virtio_x.ko\n" {
		t.Errorf("module order file = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(x, "init")); string(got) != initScript {
		t.Errorf("init script differs after unpacking")
	}
}

func TestModuleOrderPutsDependenciesFirst(t *testing.T) {
	ents, _ := filepath.Glob("/var/lib/hearth-test/vm/kernel/*/kernel.json")
	if len(ents) == 0 {
		t.Skip("no cached Debian kernel (run the qemu tests first)")
	}
	k, err := readKernel(filepath.Dir(ents[0]))
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range k.Modules {
		pos[m] = i
	}
	for _, pair := range [][2]string{{"virtio", "virtio_mmio"}, {"virtio_ring", "virtio_blk"}, {"net_failover", "virtio_net"}, {"failover", "net_failover"}} {
		a, okA := pos[pair[0]]
		b, okB := pos[pair[1]]
		if !okA || !okB || a > b {
			t.Errorf("module %s must load before %s: order %v", pair[0], pair[1], k.Modules)
		}
	}
}

func TestExt4FreeMiB(t *testing.T) {
	for _, tc := range []struct {
		out     string
		want    int64
		wantErr bool
	}{
		{"Filesystem volume name:   hearth-root\nBlock count:              262144\nFree blocks:              16384\nBlock size:               4096\n", 64, false},
		{"Free blocks: 2048\nBlock size: 1024\n", 2, false},
		{"Free blocks: 2048\n", 0, true},
		{"Free blocks: many\nBlock size: 4096\n", 0, true},
	} {
		got, err := ext4FreeMiB(tc.out)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ext4FreeMiB(%q) = %d, %v; want %d, error %v", tc.out, got, err, tc.want, tc.wantErr)
		}
	}
}

// Images are built without leaving lock files, and DropImages takes every image of one
// template (each disk size) and nothing of another whose name it begins.
func TestDropImages(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	ctx := context.Background()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "images")
	build := func(name, version string, freeMiB int) string {
		t.Helper()
		tpl := runtime.Template{Name: name, Version: version, RootFS: root}
		p, err := EnsureImage(ctx, ImageOptions{Dir: dir, MinSizeMiB: 16, FreeMiB: freeMiB}, tpl)
		if err != nil {
			t.Fatalf("EnsureImage %s %s: %v", name, version, err)
		}
		if p != ImagePath(dir, tpl, freeMiB) {
			t.Fatalf("EnsureImage put %s at %s, ImagePath says %s", name, p, ImagePath(dir, tpl, freeMiB))
		}
		return p
	}
	a1, a2 := build("a", "b1-0123", 0), build("a", "b1-0123", 24)
	other := build("a-b", "b1-0123", 0)
	var locks []string
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, _ error) error {
		if strings.HasSuffix(p, ".lock") {
			locks = append(locks, p)
		}
		return nil
	})
	if len(locks) > 0 {
		t.Errorf("lock files left after the builds: %v", locks)
	}
	if err := DropImages(ctx, dir, "a"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a1, a2, filepath.Dir(a1)} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after DropImages(a): %v", p, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("DropImages(a) took template a-b's image: %v", err)
	}
	if err := DropImages(ctx, dir, "never-built"); err != nil {
		t.Errorf("DropImages of a template with no images: %v", err)
	}
	for _, bad := range []string{"", "..", "../a-b", "x/y"} {
		if err := DropImages(ctx, dir, bad); err == nil {
			t.Errorf("DropImages(%q) accepted", bad)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("template a-b's image gone after the invalid names: %v", err)
	}
}
