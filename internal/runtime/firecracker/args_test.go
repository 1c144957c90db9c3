package firecracker

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/runtime"
)

func TestJailerArgs(t *testing.T) {
	d := &Driver{cfg: Config{Firecracker: "/opt/fc/firecracker", Jailer: "/opt/fc/jailer", UID: 900, GID: 901,
		RunDir: "/srv/hearth/fc", CgroupParent: "hearth-fc", IDPrefix: "hearth"}}
	spec := func(cpus, mem int) runtime.Spec {
		return runtime.Spec{ID: "sbx_1", CPUs: cpus, MemoryMiB: mem, Net: runtime.Net{NetNS: "/run/netns/hearth-3"}}
	}
	head := []string{"--id", "hearth-sbx-1", "--exec-file", "/opt/fc/firecracker", "--uid", "900", "--gid", "901",
		"--chroot-base-dir", "/srv/hearth/fc", "--netns", "/run/netns/hearth-3", "--parent-cgroup", "hearth-fc"}
	tail := []string{"--", "--api-sock", "/api.sock"}
	tests := []struct {
		name   string
		spec   runtime.Spec
		v2     bool
		cgroup []string
	}{
		{"cgroup v2, 2 vCPUs, 1 GiB", spec(2, 1024), true,
			[]string{"--cgroup-version", "2", "--cgroup", "cpu.max=200000 100000", "--cgroup", "memory.max=1073741824"}},
		{"cgroup v1", spec(2, 1024), false,
			[]string{"--cgroup-version", "1", "--cgroup", "cpu.cfs_period_us=100000", "--cgroup", "cpu.cfs_quota_us=200000",
				"--cgroup", "memory.limit_in_bytes=1073741824"}},
		{"no CPU count means one vCPU", spec(0, 512), true,
			[]string{"--cgroup-version", "2", "--cgroup", "cpu.max=100000 100000", "--cgroup", "memory.max=536870912"}},
		{"vCPUs capped at Firecracker's 32", spec(64, 512), true,
			[]string{"--cgroup-version", "2", "--cgroup", "cpu.max=3200000 100000", "--cgroup", "memory.max=536870912"}},
		{"no memory limit given", spec(1, 0), true,
			[]string{"--cgroup-version", "2", "--cgroup", "cpu.max=100000 100000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := d.newLayout(tt.spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := append(append(slices.Clone(head), tt.cgroup...), tail...)
			if got := d.jailerArgs(tt.spec, l, tt.v2); !slices.Equal(got, want) {
				t.Errorf("jailer args\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLayoutMatchesJailerChroot: the files the driver places must be where the jailer
// chroots Firecracker, and the paths sent to a jailed Firecracker are chroot-relative.
func TestLayoutMatchesJailerChroot(t *testing.T) {
	for _, jailer := range []string{"", "/usr/bin/jailer"} {
		d := &Driver{cfg: Config{Firecracker: "/usr/bin/firecracker", Jailer: jailer, RunDir: "/srv/fc", IDPrefix: "h"}}
		l, err := d.newLayout("abc")
		if err != nil {
			t.Fatal(err)
		}
		if l.root != "/srv/fc/firecracker/h-abc/root" {
			t.Errorf("root %s", l.root)
		}
		want := "/srv/fc/firecracker/h-abc/root/rootfs.ext4"
		if jailer != "" {
			want = "/rootfs.ext4"
		}
		if got := l.guest(rootfsFile); got != want {
			t.Errorf("jailer=%q: guest path %s, want %s", jailer, got, want)
		}
	}
	d := &Driver{cfg: Config{Firecracker: "/f", RunDir: "/" + strings.Repeat("x", 90), IDPrefix: "h"}}
	if _, err := d.newLayout("abc"); err == nil {
		t.Error("a socket path over the Unix limit was accepted")
	}
}

func TestDirectCommand(t *testing.T) {
	d := &Driver{cfg: Config{Firecracker: "/usr/bin/firecracker", RunDir: "/srv/fc", IDPrefix: "h"}}
	s := runtime.Spec{ID: "abc", Net: runtime.Net{NetNS: "/run/netns/s1"}}
	l, _ := d.newLayout(s.ID)
	bin, args := d.command(s, l)
	want := []string{"--net=/run/netns/s1", "--", "/usr/bin/firecracker", "--api-sock", "/srv/fc/firecracker/h-abc/root/api.sock", "--id", "h-abc"}
	if bin != "nsenter" || !slices.Equal(args, want) {
		t.Errorf("command %s %q", bin, args)
	}
}

func TestVMID(t *testing.T) {
	tests := []struct{ prefix, id, want string }{
		{"hearth", "i1x2y3", "hearth-i1x2y3"},
		{"hearth-h", "a.b_c/d", "hearth-h-a-b-c-d"},
		{"p", strings.Repeat("z", 80), "p-" + strings.Repeat("z", 62)},
	}
	for _, tt := range tests {
		if got := vmID(tt.prefix, tt.id); got != tt.want || len(got) > maxIDLen {
			t.Errorf("vmID(%q, %q) = %q, want %q", tt.prefix, tt.id, got, tt.want)
		}
	}
}

func TestBootArgs(t *testing.T) {
	s := runtime.Spec{ID: "sbx1", Template: runtime.Template{Name: "base"}, Net: runtime.Net{GuestIP: netip.MustParseAddr("10.200.0.6")}}
	base := "console=ttyS0 reboot=k panic=1 pci=off ip=169.254.0.2::169.254.0.1:255.255.255.252::eth0:off " +
		"random.trust_cpu=on hearth.sandbox_id=sbx1 hearth.template=base"
	if got := bootArgs(s, true, "/usr/bin/envd"); got != base {
		t.Errorf("with initrd:\n got %q\nwant %q", got, base)
	}
	want := base + " root=/dev/vda rw rootfstype=ext4 init=/usr/bin/envd"
	if got := bootArgs(s, false, "/usr/bin/envd"); got != want {
		t.Errorf("without initrd:\n got %q\nwant %q", got, want)
	}
}
