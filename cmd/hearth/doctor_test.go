package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/kvmcheck"
)

// goodFacts is a host where every runtime can run.
func goodFacts() doctorFacts {
	ok := checkResult{OK: true, Detail: "ok"}
	return doctorFacts{
		Root: true, CgroupVersion: 2, DefaultRuntime: "gvisor",
		Runsc:       binaryFact{Path: "/usr/local/bin/runsc", Version: "runsc version release-20250101.0"},
		QEMU:        binaryFact{Path: "/usr/bin/qemu-system-x86_64"},
		KVM:         kvmcheck.Result{Usable: true, DeviceOK: true, CreateVM: true, LoopTime: 4 * time.Millisecond},
		Firecracker: binaryFact{Path: "/usr/bin/firecracker", Version: "Firecracker v1.14.1"},
		FCKernel:    binaryFact{Path: "/var/lib/hearth/vmlinux"},
		Userfaultfd: ok, Netns: ok, Nftables: ok,
	}
}

func TestBuildReport(t *testing.T) {
	pvm := kvmcheck.Result{DeviceOK: true, CreateVM: true, PVM: true, Reason: "guest code is emulated"}
	tests := []struct {
		name      string
		change    func(*doctorFacts)
		usable    map[string]bool
		defaultOK bool
		// substrings that must appear in the named runtime's problems or notes
		problem map[string]string
		note    map[string]string
	}{
		{"everything works", func(*doctorFacts) {},
			map[string]bool{"gvisor": true, "qemu": true, "firecracker": true}, true, nil,
			map[string]string{"qemu": "KVM acceleration", "gvisor": "cgroup v2"}},
		{"PVM host: qemu falls back to TCG, firecracker cannot run", func(f *doctorFacts) { f.KVM = pvm },
			map[string]bool{"gvisor": true, "qemu": true, "firecracker": false}, true,
			map[string]string{"firecracker": "KVM not usable: guest code is emulated"},
			map[string]string{"qemu": "TCG"}},
		{"no runsc fails the default runtime", func(f *doctorFacts) { f.Runsc = binaryFact{Err: "not found"} },
			map[string]bool{"gvisor": false, "qemu": true, "firecracker": true}, false,
			map[string]string{"gvisor": "runsc: not found"}, nil},
		{"not root: nothing runs", func(f *doctorFacts) { f.Root = false },
			map[string]bool{"gvisor": false, "qemu": false, "firecracker": false}, false,
			map[string]string{"gvisor": "root", "qemu": "root", "firecracker": "root"}, nil},
		{"no cgroups: gvisor cannot run", func(f *doctorFacts) { f.CgroupVersion = 0 },
			map[string]bool{"gvisor": false, "qemu": true, "firecracker": true}, false,
			map[string]string{"gvisor": "cgroup"}, nil},
		{"no userfaultfd: firecracker cannot resume", func(f *doctorFacts) { f.Userfaultfd = checkResult{Detail: "ENOSYS"} },
			map[string]bool{"gvisor": true, "qemu": true, "firecracker": false}, true,
			map[string]string{"firecracker": "userfaultfd (resume): ENOSYS"}, nil},
		{"firecracker default without kernel", func(f *doctorFacts) {
			f.DefaultRuntime = "firecracker"
			f.FCKernel = binaryFact{Err: "none given"}
		}, map[string]bool{"gvisor": true, "qemu": true, "firecracker": false}, false,
			map[string]string{"firecracker": "guest kernel: none given"}, nil},
		{"no nftables: nothing runs", func(f *doctorFacts) { f.Nftables = checkResult{Detail: "EPROTONOSUPPORT"} },
			map[string]bool{"gvisor": false, "qemu": false, "firecracker": false}, false,
			map[string]string{"qemu": "nftables: EPROTONOSUPPORT"}, nil},
		{"no qemu binary", func(f *doctorFacts) { f.QEMU = binaryFact{Err: "not found on PATH"} },
			map[string]bool{"gvisor": true, "qemu": false, "firecracker": true}, true,
			map[string]string{"qemu": "not found on PATH"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := goodFacts()
			tt.change(&f)
			r := buildReport(f)
			if r.DefaultOK != tt.defaultOK {
				t.Errorf("DefaultOK = %v, want %v", r.DefaultOK, tt.defaultOK)
			}
			for _, rt := range r.Runtimes {
				if rt.Usable != tt.usable[rt.Name] {
					t.Errorf("%s usable = %v, want %v (problems %q)", rt.Name, rt.Usable, tt.usable[rt.Name], rt.Problems)
				}
				if rt.Default != (rt.Name == f.DefaultRuntime) {
					t.Errorf("%s default = %v", rt.Name, rt.Default)
				}
				if want, ok := tt.problem[rt.Name]; ok && !strings.Contains(strings.Join(rt.Problems, "|"), want) {
					t.Errorf("%s problems %q lack %q", rt.Name, rt.Problems, want)
				}
				if want, ok := tt.note[rt.Name]; ok && !strings.Contains(strings.Join(rt.Notes, "|"), want) {
					t.Errorf("%s notes %q lack %q", rt.Name, rt.Notes, want)
				}
			}
		})
	}
}

// TestDoctorOnThisHost runs the real checks and asserts the report is coherent: a runtime
// is usable exactly when it has no problems, the facts agree with each other, and both
// output forms carry the verdict.
func TestDoctorOnThisHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := gatherFacts(ctx, doctorOpts{Runtime: "qemu"})
	r := buildReport(f)
	if len(r.Runtimes) != 3 {
		t.Fatalf("runtimes %+v", r.Runtimes)
	}
	for _, rt := range r.Runtimes {
		if rt.Usable != (len(rt.Problems) == 0) {
			t.Errorf("%s usable=%v with problems %q", rt.Name, rt.Usable, rt.Problems)
		}
		if rt.Name == "qemu" && rt.Usable != r.DefaultOK {
			t.Errorf("default qemu usable=%v but DefaultOK=%v", rt.Usable, r.DefaultOK)
		}
		if rt.Name == "firecracker" && !f.KVM.Usable && rt.Usable {
			t.Error("firecracker usable without KVM")
		}
	}
	if f.KVM.Usable != (f.KVM.Reason == "") || (f.KVM.Usable && !f.KVM.CreateVM) {
		t.Errorf("incoherent KVM facts %+v", f.KVM)
	}
	if f.Runsc.Err == "" && f.Runsc.Version == "" {
		t.Error("runsc found but no version")
	}
	var text bytes.Buffer
	r.writeText(&text)
	for _, rt := range r.Runtimes {
		if !strings.Contains(text.String(), rt.Name) {
			t.Errorf("text output lacks %s:\n%s", rt.Name, text.String())
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back doctorReport
	if err := json.Unmarshal(b, &back); err != nil || back.DefaultOK != r.DefaultOK || len(back.Runtimes) != 3 {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
	t.Logf("\n%s", text.String())
}
