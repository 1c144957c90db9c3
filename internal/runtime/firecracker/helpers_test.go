package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api/apitest"
)

// rig is a driver whose "firecracker" is this test binary playing the fake.
type rig struct {
	t      *testing.T
	d      *Driver
	base   string
	tpl    string
	callLg string
}

var rigSeq atomic.Int32

// newRig builds a driver in a short temp dir (socket paths must fit in 107 bytes) with
// the fake Firecracker, a dummy kernel and a small template dir.
func newRig(t *testing.T) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mkfs.ext4 -d keeps owners, nsenter enters a netns")
	}
	base, err := os.MkdirTemp("", "fct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "bin", "firecracker")
	must(t, os.MkdirAll(filepath.Dir(bin), 0o755))
	must(t, os.Symlink(self, bin))
	kernel := filepath.Join(base, "vmlinux")
	must(t, os.WriteFile(kernel, []byte("not a kernel: the fake never boots it"), 0o644))
	tpl := filepath.Join(base, "tpl")
	must(t, os.MkdirAll(filepath.Join(tpl, "usr", "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(tpl, "usr", "bin", "envd"), []byte("#!/bin/true\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(tpl, "hello.txt"), []byte("hello from the template\n"), 0o644))
	d, err := New(Config{
		Firecracker:    bin,
		Kernel:         kernel,
		RunDir:         filepath.Join(base, "run"),
		ImageDir:       filepath.Join(base, "img"),
		IDPrefix:       "hfctest" + strconv.Itoa(os.Getpid()),
		BalloonTimeout: 200 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, d: d, base: base, tpl: tpl, callLg: filepath.Join(base, "calls.jsonl")}
	t.Setenv(envFake, "1")
	t.Setenv(envCallLog, r.callLg)
	return r
}

// spec returns a sandbox spec whose envd address is a loopback address private to it, so
// the fake envd of each test has its own.
func (r *rig) spec(id string) runtime.Spec {
	n := rigSeq.Add(1)
	ip := netip.AddrFrom4([4]byte{127, 77, byte(os.Getpid() % 250), byte(n)})
	s := runtime.Spec{
		ID:        id,
		Dir:       filepath.Join(r.base, "sandboxes", id),
		Template:  runtime.Template{Name: "base", RootFS: r.tpl, Version: "v1"},
		Net:       runtime.Net{NetNS: fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), GuestIP: ip},
		CPUs:      2,
		MemoryMiB: 512,
	}
	r.t.Setenv(envEnvdAddr, s.EnvdAddr().String())
	r.t.Cleanup(func() { _ = r.d.Destroy(context.Background(), s) })
	return s
}

// calls returns the calls every fake Firecracker of the rig received, in order.
func (r *rig) calls() []apitest.Call {
	r.t.Helper()
	f, err := os.Open(r.callLg)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	var out []apitest.Call
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c apitest.Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// describe renders a call for order assertions: route, plus the VM state or balloon size
// where that is what the call is about, plus its status when it failed.
func describe(c apitest.Call) string {
	s := c.Route
	var body map[string]any
	_ = json.Unmarshal(c.Body, &body)
	switch c.Route {
	case "PATCH /vm":
		s += " " + fmt.Sprint(body["state"])
	case "PATCH /balloon":
		s += " " + fmt.Sprint(body["amount_mib"])
	}
	if c.Status/100 != 2 {
		s += fmt.Sprintf(" -> %d", c.Status)
	}
	return s
}

func describeAll(cs []apitest.Call) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, describe(c))
	}
	return out
}

// vmPIDs lists live processes whose --id is vmID.
func vmPIDs(vmID string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if id, ok := flagValue(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), "--id"); ok && id == vmID {
			pids = append(pids, pid)
		}
	}
	return pids
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
