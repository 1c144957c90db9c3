package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/template"
)

// templateShare moves templates between agents through their artifacts store: every built
// template is uploaded (its directory as one tree object, and a manifest naming it with the
// build's version), its manifest digest goes out with the heartbeats, and the control plane
// hands it to an agent that lacks the template on a create, which fetches and installs it.
type templateShare struct {
	store   artifacts.Store
	dataDir string
	log     *slog.Logger

	mu       sync.Mutex
	fetching map[string]*sync.Mutex
}

const (
	templateManifestKind = "hearth.template.v1"
	// templateShareDir holds, per template, the build last uploaded and its manifest digest.
	templateShareDir = "template-artifacts"
	// templatePublishEvery is how often new builds are looked for and uploaded.
	templatePublishEvery = time.Minute
)

type templateManifest struct {
	Kind    string           `json:"kind"`
	Name    string           `json:"name"`
	Version string           `json:"version"`
	Tree    artifacts.Digest `json:"tree"`
	Size    int64            `json:"size"`
}

type templateUpload struct {
	Version  string           `json:"version"`
	Manifest artifacts.Digest `json:"manifest"`
}

func newTemplateShare(store artifacts.Store, dataDir string, log *slog.Logger) *templateShare {
	return &templateShare{store: store, dataDir: dataDir, log: log, fetching: map[string]*sync.Mutex{}}
}

func (ts *templateShare) uploadPath(name string) string {
	return filepath.Join(ts.dataDir, templateShareDir, name+".json")
}

// fetchFunc is fetch for the sandbox manager; nil without a store.
func (ts *templateShare) fetchFunc() func(ctx context.Context, name, manifest string) error {
	if ts == nil {
		return nil
	}
	return ts.fetch
}

// published returns the manifest digest of the given build of template name, once uploaded.
func (ts *templateShare) published(name, version string) artifacts.Digest {
	if ts == nil {
		return ""
	}
	b, err := os.ReadFile(ts.uploadPath(name))
	if err != nil {
		return ""
	}
	var u templateUpload
	if json.Unmarshal(b, &u) != nil || u.Version != version {
		return ""
	}
	return u.Manifest
}

// run uploads new builds until ctx ends.
func (ts *templateShare) run(ctx context.Context) {
	for {
		ts.publishAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(templatePublishEvery):
		}
	}
}

// publishAll uploads every built template whose current build is not in the store yet.
func (ts *templateShare) publishAll(ctx context.Context) {
	ents, _ := os.ReadDir(filepath.Join(ts.dataDir, "templates"))
	for _, e := range ents {
		t, err := template.Open(ts.dataDir, e.Name())
		if err != nil || ctx.Err() != nil {
			continue
		}
		if d := ts.published(t.Name, t.Version()); d != "" {
			if _, err := ts.store.Stat(ctx, d); err == nil {
				continue
			}
		}
		if err := ts.publish(ctx, t); err != nil {
			ts.log.Warn("upload template: other agents cannot fetch it", "template", t.Name, "err", err)
		}
	}
}

func (ts *templateShare) publish(ctx context.Context, t *template.Template) error {
	start := time.Now()
	// Two passes over the tree, which does not change (a rebuild replaces the dir): its
	// digest and size first, then the upload, so no local copy of the archive is written.
	h, n := sha256.New(), &countWriter{}
	if err := artifacts.PackTree(io.MultiWriter(h, n), t.Dir); err != nil {
		return err
	}
	tree := artifacts.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	if size, err := ts.store.Stat(ctx, tree); err != nil || size != n.n {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(artifacts.PackTree(pw, t.Dir)) }()
		err := ts.store.Put(ctx, tree, pr, n.n)
		pr.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("upload tree: %w", err)
		}
	}
	b, err := json.Marshal(templateManifest{Kind: templateManifestKind, Name: t.Name, Version: t.Version(), Tree: tree, Size: n.n})
	if err != nil {
		return err
	}
	d, err := artifacts.PutBytes(ctx, ts.store, b)
	if err != nil {
		return err
	}
	if err := ts.record(t.Name, t.Version(), d); err != nil {
		return err
	}
	ts.log.Info("template uploaded", "template", t.Name, "version", t.Version(), "manifest", d, "bytes", n.n,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (ts *templateShare) record(name, version string, d artifacts.Digest) error {
	b, _ := json.Marshal(templateUpload{Version: version, Manifest: d})
	if err := os.MkdirAll(filepath.Join(ts.dataDir, templateShareDir), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(ts.uploadPath(name), b, 0o600)
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// fetch installs template name from the build manifest names, unless the template is here
// already (another create fetched it meanwhile). The tree is downloaded and checked against
// its digest, unpacked beside the templates and renamed into place, so a template dir is
// never seen half written; the unpacked build must be the manifest's.
func (ts *templateShare) fetch(ctx context.Context, name, manifest string) error {
	if err := template.CheckName(name); err != nil {
		return err
	}
	ts.mu.Lock()
	l, ok := ts.fetching[name]
	if !ok {
		l = &sync.Mutex{}
		ts.fetching[name] = l
	}
	ts.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if _, err := template.Open(ts.dataDir, name); err == nil {
		return nil
	}
	start := time.Now()
	b, err := artifacts.GetBytes(ctx, ts.store, artifacts.Digest(manifest), 1<<20)
	if err != nil {
		return err
	}
	var m templateManifest
	if err := json.Unmarshal(b, &m); err != nil || m.Kind != templateManifestKind || m.Name != name {
		return fmt.Errorf("%s is not a manifest of template %q (%v)", manifest, name, err)
	}
	tplDir := filepath.Join(ts.dataDir, "templates")
	if err := os.MkdirAll(tplDir, 0o755); err != nil {
		return err
	}
	// Dot names are not template names: nothing lists these as templates.
	tar := filepath.Join(tplDir, "."+name+".fetch.tar")
	defer os.Remove(tar)
	if err := artifacts.FetchFile(ctx, ts.store, m.Tree, tar, 0o600); err != nil {
		return err
	}
	f, err := os.Open(tar)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp := filepath.Join(tplDir, fmt.Sprintf(".%s.fetch-%d", name, time.Now().UnixNano()))
	if err := artifacts.UnpackTree(f, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := durable.SyncTree(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	final := template.Dir(ts.dataDir, name)
	if err := durable.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	t, err := template.Open(ts.dataDir, name)
	if err == nil && t.Version() != m.Version {
		err = fmt.Errorf("unpacked build %s, the manifest names %s", t.Version(), m.Version)
	}
	if err != nil {
		os.RemoveAll(final)
		return fmt.Errorf("install fetched template %s: %w", name, err)
	}
	if err := ts.record(name, m.Version, artifacts.Digest(manifest)); err != nil {
		ts.log.Warn("record fetched template", "template", name, "err", err)
	}
	ts.log.Info("template fetched", "template", name, "version", m.Version, "bytes", m.Size, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// drop removes what this agent uploaded of template name (a deleted version) from the
// store: its manifest and its tree. A tree holds the version's own meta (a build ID of its
// own), so no other version's manifest names it.
func (ts *templateShare) drop(ctx context.Context, name string) error {
	b, err := os.ReadFile(ts.uploadPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var u templateUpload
	if err := json.Unmarshal(b, &u); err != nil {
		return fmt.Errorf("upload record of %s: %w", name, err)
	}
	mb, err := artifacts.GetBytes(ctx, ts.store, u.Manifest, 1<<20)
	if errors.Is(err, artifacts.ErrNotFound) {
		// Another agent that had the version dropped it first.
		return os.Remove(ts.uploadPath(name))
	}
	if err != nil {
		return fmt.Errorf("read manifest %s: %w", u.Manifest, err)
	}
	var m templateManifest
	if err := json.Unmarshal(mb, &m); err != nil || m.Kind != templateManifestKind || m.Name != name {
		return fmt.Errorf("manifest %s is not template %s's", u.Manifest, name)
	}
	if err := ts.store.Delete(ctx, m.Tree); err != nil {
		return fmt.Errorf("delete tree %s: %w", m.Tree, err)
	}
	if err := ts.store.Delete(ctx, u.Manifest); err != nil {
		return fmt.Errorf("delete manifest %s: %w", u.Manifest, err)
	}
	ts.log.Info("template upload dropped", "template", name, "manifest", u.Manifest)
	return os.Remove(ts.uploadPath(name))
}
