// Package template builds and caches sandbox templates: a root filesystem directory (what the
// gVisor runtime boots) plus the envd binary injected at /usr/bin/envd.
//
// The slow part, debootstrap, runs once per template and is cached under
// <data-dir>/templates/<name>/. Every build re-injects envd by copying one file, so a template
// never carries a stale envd while a rebuild of the rootfs stays rare.
package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

// EnvdPath is where envd lives inside every template's root filesystem.
const EnvdPath = "/usr/bin/envd"

// Template is a built template on disk.
type Template struct {
	// Name is the template's name, e.g. "base".
	Name string
	// Dir is the template's cache directory, <data-dir>/templates/<name>.
	Dir string
	// RootFS is the root filesystem directory, a real directory (runsc rejects symlinks).
	RootFS string
	// Meta is what the build recorded.
	Meta Meta
}

// Meta is recorded next to the root filesystem in meta.json.
type Meta struct {
	Name    string `json:"name"`
	BuildID string `json:"build_id"` // random, new for every debootstrap
	Suite   string `json:"suite"`
	// Recipe is the fingerprint of the recipe the rootfs was built from; Build rebuilds a
	// cached rootfs whose recipe has changed since.
	Recipe string `json:"recipe,omitempty"`
	Mirror string `json:"mirror"`
	// BuiltAt and BuildSeconds describe the debootstrap run.
	BuiltAt      time.Time `json:"built_at"`
	BuildSeconds float64   `json:"build_seconds"`
	// SizeBytes is the disk usage of the root filesystem (allocated blocks, hard links once).
	SizeBytes int64 `json:"size_bytes"`
	// EnvdSHA256 is the hash of the injected envd binary.
	EnvdSHA256 string    `json:"envd_sha256"`
	EnvdAt     time.Time `json:"envd_injected_at"`
	// From and Run are set for a template derived from another (Derive): the template it
	// started from and the commands run in it.
	From string   `json:"from,omitempty"`
	Run  []string `json:"run,omitempty"`
	// Image and ImageDigest are set for a template built from an OCI image: the reference
	// given and the digest of the linux/amd64 manifest pulled.
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	// DiskMiB is the disk size of the template's sandboxes (`hearth template build
	// --disk-mib`); 0 leaves it to the agent's --default-disk-mib.
	DiskMiB int `json:"disk_mib,omitempty"`
	// User, Workdir and Env are the final context of an API build (E2B Template SDK): the
	// default user and working directory of its sandboxes (empty: the agent's defaults) and
	// the variables its steps set, which its sandboxes get too.
	User    string            `json:"user,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// StartCmd runs in the template's sandbox once, before its start snapshot is taken,
	// after ReadyCmd succeeds; sandboxes restored from that snapshot find it running.
	StartCmd string `json:"start_cmd,omitempty"`
	ReadyCmd string `json:"ready_cmd,omitempty"`
}

// Derived reports whether the template was made from another template or an image rather
// than by a recipe of its own: Build only refreshes its envd.
func (m Meta) Derived() bool { return m.From != "" || m.Image != "" }

// Version identifies the exact content of a template: it changes when the rootfs is rebuilt
// or a different envd is injected. Runtimes key cached snapshots of the booted template on it.
func (t *Template) Version() string {
	h := t.Meta.EnvdSHA256
	if len(h) > 16 {
		h = h[:16]
	}
	return t.Meta.BuildID + "-" + h
}

// Runtime is what a runtime driver needs to boot the template.
func (t *Template) Runtime() runtime.Template {
	return runtime.Template{
		Name: t.Name, RootFS: t.RootFS, Version: t.Version(), DiskMiB: t.Meta.DiskMiB,
		StartCmd: t.Meta.StartCmd, ReadyCmd: t.Meta.ReadyCmd, User: t.Meta.User, Workdir: t.Meta.Workdir, Env: t.Meta.Env,
	}
}

// Dir returns the cache directory of template name under dataDir.
func Dir(dataDir, name string) string {
	return filepath.Join(dataDir, "templates", name)
}

const (
	rootfsName = "rootfs"
	metaName   = "meta.json"
)

// ErrNotBuilt means the template has never been built under the data dir.
var ErrNotBuilt = errors.New("template not built")

// Open returns the template name cached under dataDir, or ErrNotBuilt.
func Open(dataDir, name string) (*Template, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("open template: %w", err)
	}
	dir := Dir(dataDir, name)
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open template %s in %s: %w", name, dataDir, ErrNotBuilt)
	}
	if err != nil {
		return nil, fmt.Errorf("open template %s: %w", name, err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("open template %s: parse %s: %w", name, metaName, err)
	}
	t := &Template{Name: name, Dir: dir, RootFS: filepath.Join(dir, rootfsName), Meta: m}
	fi, err := os.Lstat(t.RootFS)
	if err != nil {
		return nil, fmt.Errorf("open template %s: %w", name, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open template %s: %s is not a real directory", name, t.RootFS)
	}
	return t, nil
}

// writeMeta replaces dir/meta.json atomically.
func writeMeta(dir string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaName)); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}
