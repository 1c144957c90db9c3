package main

import (
	"context"
	"encoding/json"
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := artifacts.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
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
