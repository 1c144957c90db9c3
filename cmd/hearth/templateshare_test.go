package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/template"
)

// TestTemplateShare: an agent uploads its built template; an agent that lacks it fetches it
// by the manifest digest and has the same build, files included; a manifest of another
// template is refused and installs nothing.
func TestTemplateShare(t *testing.T) {
	ctx, store, log := shareTestSetup(t)
	src, dst := t.TempDir(), t.TempDir()
	dir := template.Dir(src, "base")
	os.MkdirAll(filepath.Join(dir, "rootfs", "usr", "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "rootfs", "usr", "bin", "envd"), []byte("envd binary"), 0o755)
	meta, _ := json.Marshal(template.Meta{Name: "base", BuildID: "build-1", EnvdSHA256: strings.Repeat("ab", 32)})
	os.WriteFile(filepath.Join(dir, "meta.json"), meta, 0o644)
	want, err := template.Open(src, "base")
	if err != nil {
		t.Fatal(err)
	}

	a := newTemplateShare(store, src, log)
	a.publishAll(ctx)
	manifest := a.published("base", want.Version())
	if manifest == "" {
		t.Fatal("no manifest recorded for the built template")
	}
	if got := builtTemplates(src, a); len(got) != 1 || got[0].Artifact != string(manifest) {
		t.Fatalf("heartbeat templates %+v, want base with artifact %s", got, manifest)
	}

	b := newTemplateShare(store, dst, log)
	other, _ := artifacts.PutBytes(ctx, store, []byte(`{"kind":"hearth.template.v1","name":"other","version":"x"}`))
	if err := b.fetch(ctx, "base", string(other)); err == nil {
		t.Fatal("a manifest of another template was installed as base")
	}
	if _, err := template.Open(dst, "base"); err == nil {
		t.Fatal("refused fetch left a template")
	}
	if err := b.fetch(ctx, "base", string(manifest)); err != nil {
		t.Fatal(err)
	}
	got, err := template.Open(dst, "base")
	if err != nil || got.Version() != want.Version() {
		t.Fatalf("fetched template: %v, %v; want build %s", got, err, want.Version())
	}
	if c, _ := os.ReadFile(filepath.Join(got.RootFS, "usr", "bin", "envd")); string(c) != "envd binary" {
		t.Fatalf("fetched rootfs file: %q", c)
	}
	if ents, _ := filepath.Glob(filepath.Join(dst, "templates", ".*")); len(ents) != 0 {
		t.Fatalf("fetch left %v", ents)
	}
	// Fetched, it is published too: the agent reports it like one it built.
	if b.published("base", want.Version()) != manifest {
		t.Fatal("fetched template not recorded as published")
	}
}

// TestTemplateVersionDrop: deleting one version of a template removes that version's
// manifest and tree from the store and the host, and leaves another version of the same
// template fetchable; a second agent that had fetched the dropped version drops it too.
func TestTemplateVersionDrop(t *testing.T) {
	ctx, store, log := shareTestSetup(t)
	src, dst, third := t.TempDir(), t.TempDir(), t.TempDir()
	v1, v2 := "tpl00000000000000001-build-1", "tpl00000000000000001-build-2"
	for i, name := range []string{v1, v2} {
		dir := template.Dir(src, name)
		os.MkdirAll(filepath.Join(dir, "rootfs", "etc"), 0o755)
		os.WriteFile(filepath.Join(dir, "rootfs", "etc", "tag-version"), []byte(name), 0o644)
		meta, _ := json.Marshal(template.Meta{Name: name, BuildID: fmt.Sprintf("b%d", i), EnvdSHA256: strings.Repeat("ab", 32)})
		os.WriteFile(filepath.Join(dir, "meta.json"), meta, 0o644)
	}
	a := newTemplateShare(store, src, log)
	a.publishAll(ctx)
	manifest := map[string]artifacts.Digest{}
	for _, name := range []string{v1, v2} {
		tp, err := template.Open(src, name)
		if err != nil {
			t.Fatal(err)
		}
		if manifest[name] = a.published(name, tp.Version()); manifest[name] == "" {
			t.Fatalf("%s not published", name)
		}
	}
	b := newTemplateShare(store, dst, log)
	if err := b.fetch(ctx, v1, string(manifest[v1])); err != nil {
		t.Fatal(err)
	}
	mb, _ := artifacts.GetBytes(ctx, store, manifest[v1], 1<<20)
	var m1 templateManifest
	_ = json.Unmarshal(mb, &m1)

	if gone, err := template.Remove(ctx, src, v1); err != nil || !gone {
		t.Fatalf("remove v1: %v, %v", gone, err)
	}
	if err := a.drop(ctx, v1); err != nil {
		t.Fatal(err)
	}
	for _, d := range []artifacts.Digest{manifest[v1], m1.Tree} {
		if _, err := store.Stat(ctx, d); !errors.Is(err, artifacts.ErrNotFound) {
			t.Fatalf("object %s of the dropped version: %v, want not found", d, err)
		}
	}
	if _, err := template.Open(src, v1); err == nil {
		t.Fatal("removed version still opens")
	}
	if gone, err := template.Remove(ctx, src, v1); err != nil || gone {
		t.Fatalf("remove v1 again: %v, %v; want nothing to do", gone, err)
	}
	// The agent that fetched v1 drops its record although the objects are gone.
	if err := b.drop(ctx, v1); err != nil {
		t.Fatal(err)
	}
	// v2 is untouched: a third agent still fetches it.
	c := newTemplateShare(store, third, log)
	if err := c.fetch(ctx, v2, string(manifest[v2])); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(template.Dir(third, v2), "rootfs", "etc", "tag-version")); string(got) != v2 {
		t.Fatalf("fetched v2 file: %q", got)
	}
}

// shareTestSetup returns a test's context, an artifacts store in a temp dir and a quiet log.
func shareTestSetup(t *testing.T) (context.Context, artifacts.Store, *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	store, err := artifacts.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ctx, store, slog.New(slog.NewTextHandler(io.Discard, nil))
}
