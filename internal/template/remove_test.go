package template

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRemove: a template's directory goes, and what an interrupted remove left with it; a
// template that is not there is reported so and leaves nothing behind.
func TestRemove(t *testing.T) {
	data := t.TempDir()
	root := filepath.Join(data, "templates")
	name := "tpl-version-1"
	if err := os.MkdirAll(filepath.Join(Dir(data, name), "rootfs", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(root, "."+name+".old-dead")
	if err := os.MkdirAll(filepath.Join(leftover, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := Dir(data, "tpl-version-2")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if gone, err := Remove(ctx, data, name); err != nil || !gone {
		t.Fatalf("remove: %v, %v", gone, err)
	}
	// The lock file goes with the version: a version's name is never built again.
	for _, p := range []string{Dir(data, name), leftover, filepath.Join(root, "."+name+".lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s after remove: %v", p, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("another version went too: %v", err)
	}
	if gone, err := Remove(ctx, data, name); err != nil || gone {
		t.Fatalf("remove again: %v, %v", gone, err)
	}
	if ents, _ := filepath.Glob(filepath.Join(root, "."+name+"*")); len(ents) > 0 {
		t.Fatalf("left after removing twice: %v", ents)
	}
	if gone, err := Remove(ctx, t.TempDir(), "never-built"); err != nil || gone {
		t.Fatalf("remove in a data dir without templates: %v, %v", gone, err)
	}
	if _, err := Remove(ctx, data, "../x"); err == nil {
		t.Fatal("remove of an invalid name worked")
	}
}

// TestSweepRemoved: leftovers of interrupted removes of versions go; those of other names stay
// for their next build.
func TestSweepRemoved(t *testing.T) {
	data := t.TempDir()
	root := filepath.Join(data, "templates")
	version, other := filepath.Join(root, ".tpl-v1.old-ab12"), filepath.Join(root, ".base.old-cd34")
	for _, p := range []string{version, other} {
		if err := os.MkdirAll(filepath.Join(p, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	SweepRemoved(context.Background(), data, func(name string) bool { return name == "tpl-v1" })
	for _, p := range []string{version, filepath.Join(root, ".tpl-v1.lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s after the sweep: %v", p, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("another name's leftover went: %v", err)
	}
}
