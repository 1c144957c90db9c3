package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/runtime"
)

// A paused sandbox moves between hosts as a manifest in the artifacts store: its record and
// the digests of the files of its paused state (runtime.PortablePauser). The manifest is an
// object too, so its digest names the whole paused sandbox; the control plane keeps it and
// hands it to whichever agent resumes the sandbox.

const (
	manifestKind = "hearth.paused-sandbox.v1"
	// maxManifest bounds what an agent reads as a manifest.
	maxManifest = 4 << 20
	// importPrefix names the dirs an import assembles a sandbox in before renaming it into
	// place; not a sandbox ID, so Recover never loads one, and removes leftovers.
	importPrefix = ".import-"
)

var (
	// ErrTemplateMismatch: the snapshot was taken on a template build this host lacks.
	ErrTemplateMismatch = errors.New("this host does not have the template build the snapshot needs")
	// ErrNoArtifacts: the agent has no artifacts store to fetch a snapshot from.
	ErrNoArtifacts = errors.New("this agent has no artifacts store (--artifacts)")
)

type snapshotManifest struct {
	Kind string `json:"kind"`
	// TemplateVersion is runtime.Template.Version of the template the sandbox was booted
	// from: the snapshot restores over exactly that rootfs.
	TemplateVersion string `json:"templateVersion"`
	// Record is the sandbox's record as paused (sandbox.json), secrets included.
	Record json.RawMessage `json:"record"`
	Files  []manifestFile  `json:"files"`
}

type manifestFile struct {
	// Path is relative to the sandbox's dir, under one of the driver's PausedDirs.
	Path   string           `json:"path"`
	Digest artifacts.Digest `json:"digest"`
	Size   int64            `json:"size"`
	Mode   fs.FileMode      `json:"mode"`
}

// portable returns the driver's paused-state dirs, when this agent can move sandboxes.
func (m *Manager) portable() (runtime.PortablePauser, bool) {
	if m.cfg.Artifacts == nil {
		return nil, false
	}
	pd, ok := m.cfg.Driver.(runtime.PortablePauser)
	return pd, ok
}

// export uploads what another host needs to resume the just-paused sandbox rec (its files
// first, then the manifest naming them) and returns the manifest's digest. Called while rec
// is still pausing, so no resume can consume the snapshot underneath.
func (m *Manager) export(ctx context.Context, rec *record, tpl runtime.Template, fsOnly bool) (artifacts.Digest, error) {
	pd, ok := m.portable()
	if !ok {
		return "", nil
	}
	start := time.Now()
	m.mu.Lock()
	paused := *rec
	m.mu.Unlock()
	paused.State, paused.SnapshotManifest = Paused, ""
	paused.SlotAddr, paused.SlotNetns, paused.EnvdAddr = netip.Addr{}, "", netip.AddrPort{}
	recJSON, err := json.Marshal(&paused)
	if err != nil {
		return "", err
	}
	man := snapshotManifest{Kind: manifestKind, TemplateVersion: tpl.Version, Record: recJSON}
	var total int64
	for _, sub := range pd.PausedDirs(fsOnly) {
		root := filepath.Join(m.dir(rec.ID), "runtime", sub)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() {
				return nil
			}
			if !e.Type().IsRegular() {
				return fmt.Errorf("%s: not a regular file", p)
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			d, n, err := artifacts.PutFile(ctx, m.cfg.Artifacts, p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(m.dir(rec.ID), p)
			man.Files = append(man.Files, manifestFile{Path: filepath.ToSlash(rel), Digest: d, Size: n, Mode: fi.Mode().Perm()})
			total += n
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("upload paused state %s: %w", sub, err)
		}
	}
	b, err := json.Marshal(man)
	if err != nil {
		return "", err
	}
	d, err := artifacts.PutBytes(ctx, m.cfg.Artifacts, b)
	if err != nil {
		return "", fmt.Errorf("upload manifest: %w", err)
	}
	m.cfg.Log.Info("paused sandbox uploaded", "sandbox", rec.ID, "manifest", d, "files", len(man.Files), "bytes", total,
		"store", m.cfg.Artifacts.String(), "took", time.Since(start).Round(time.Millisecond))
	return d, nil
}

// ResumeFrom resumes sandbox id from the paused state manifest names. A sandbox this host
// holds paused with that manifest (it paused it, or fetched it before) resumes as Resume
// does; otherwise the snapshot is fetched from the artifacts store and checked, and replaces
// any older paused copy here, before it is resumed. On failure an older copy is kept as it
// was.
func (m *Manager) ResumeFrom(ctx context.Context, id string, manifest artifacts.Digest) (Info, error) {
	if manifest == "" {
		return m.Resume(ctx, id)
	}
	m.mu.Lock()
	old, had := m.sandboxes[id]
	same := had && old.SnapshotManifest == string(manifest)
	m.mu.Unlock()
	if same {
		return m.Resume(ctx, id) // this host's copy is that snapshot: no store needed
	}
	if _, ok := m.portable(); !ok {
		if m.cfg.Artifacts == nil {
			return Info{}, fmt.Errorf("resume %s from %s: %w", id, manifest, ErrNoArtifacts)
		}
		return Info{}, fmt.Errorf("resume %s: %w: this runtime's snapshots cannot move between hosts", id, ErrSnapshotUnsupported)
	}
	if err := manifest.Validate(); err != nil {
		return Info{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !idRE.MatchString(id) {
		return Info{}, fmt.Errorf("%w: sandbox id %q", ErrInvalid, id)
	}
	m.mu.Lock()
	if cur, ok := m.sandboxes[id]; ok != had || cur != old {
		m.mu.Unlock()
		return Info{}, &BusyError{ID: id, State: Resuming, Op: "resume"} // changed meanwhile
	}
	if had && old.State != Paused {
		st := old.State
		m.mu.Unlock()
		return Info{}, &BusyError{ID: id, State: st, Op: "resume"}
	}
	if err := m.admitLocked(); err != nil {
		m.mu.Unlock()
		return Info{}, err
	}
	// Held as resuming while the snapshot downloads: every other operation is refused.
	if had {
		old.State = Resuming
	} else {
		m.sandboxes[id] = &record{Info: Info{ID: id, State: Resuming, CreatedAt: time.Now().UTC()}}
	}
	m.mu.Unlock()
	undo := func() {
		m.mu.Lock()
		if had {
			old.State = Paused
		} else {
			delete(m.sandboxes, id)
		}
		m.mu.Unlock()
	}
	start := time.Now()
	tmp, rec, err := m.fetch(ctx, id, manifest)
	if err != nil {
		undo()
		return Info{}, fmt.Errorf("resume %s from %s: %w", id, manifest, err)
	}
	if had {
		// The control plane's manifest is newer than this host's copy (the sandbox ran and
		// paused elsewhere since): the copy goes, now that the new one is here and checked.
		tpl, _ := m.cfg.Templates(old.Template)
		if err := m.cfg.Driver.Destroy(ctx, m.specFor(old, tpl)); err != nil {
			os.RemoveAll(tmp)
			undo()
			return Info{}, fmt.Errorf("resume %s: replace older paused copy: %w", id, err)
		}
		os.RemoveAll(m.dir(id))
	}
	if err := durable.Rename(tmp, m.dir(id)); err != nil {
		os.RemoveAll(tmp)
		m.mu.Lock()
		delete(m.sandboxes, id)
		m.mu.Unlock()
		return Info{}, fmt.Errorf("resume %s: %w", id, err)
	}
	m.mu.Lock()
	m.sandboxes[id] = rec
	m.mu.Unlock()
	m.cfg.Log.Info("fetched paused sandbox", "sandbox", id, "manifest", manifest, "took", time.Since(start).Round(time.Millisecond))
	return m.Resume(ctx, id)
}

// fetch downloads the paused sandbox manifest names into a new dir of the data dir,
// checking every file against its digest, and returns the dir and the sandbox's record.
func (m *Manager) fetch(ctx context.Context, id string, manifest artifacts.Digest) (string, *record, error) {
	pd, _ := m.portable()
	b, err := artifacts.GetBytes(ctx, m.cfg.Artifacts, manifest, maxManifest)
	if err != nil {
		return "", nil, err
	}
	var man snapshotManifest
	if err := json.Unmarshal(b, &man); err != nil || man.Kind != manifestKind {
		return "", nil, fmt.Errorf("%w: %s is not a paused sandbox manifest (%v)", ErrInvalid, manifest, err)
	}
	var rec record
	if err := json.Unmarshal(man.Record, &rec); err != nil {
		return "", nil, fmt.Errorf("manifest %s: record: %w", manifest, err)
	}
	if rec.ID != id {
		return "", nil, fmt.Errorf("%w: manifest %s is of sandbox %q, not %q", ErrInvalid, manifest, rec.ID, id)
	}
	tpl, err := m.cfg.Templates(rec.Template)
	if err != nil {
		return "", nil, fmt.Errorf("%w: template %q: %v", ErrTemplateMismatch, rec.Template, err)
	}
	if tpl.Version != man.TemplateVersion {
		return "", nil, fmt.Errorf("%w: template %q here is build %s, the sandbox was paused on build %s (build or fetch that one here, or resume it where it is)",
			ErrTemplateMismatch, rec.Template, tpl.Version, man.TemplateVersion)
	}
	var allowed []string
	for _, d := range pd.PausedDirs(rec.FilesystemOnly) {
		allowed = append(allowed, "runtime/"+d+"/")
	}
	tmp, err := os.MkdirTemp(m.cfg.DataDir, importPrefix+id+"-")
	if err != nil {
		return "", nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range man.Files {
		// The manifest comes from the store, which other hosts write: a path must stay in
		// the paused-state dirs, so it cannot overwrite the record or escape the sandbox dir.
		if !filepath.IsLocal(f.Path) || filepath.ToSlash(filepath.Clean(f.Path)) != f.Path ||
			!hasAnyPrefix(f.Path, allowed) {
			return "", nil, fmt.Errorf("%w: manifest %s names file %q outside %v", ErrInvalid, manifest, f.Path, allowed)
		}
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return "", nil, err
		}
		if err := artifacts.FetchFile(ctx, m.cfg.Artifacts, f.Digest, dst, f.Mode.Perm()|0o600); err != nil {
			return "", nil, fmt.Errorf("%s: %w", f.Path, err)
		}
	}
	rec.State, rec.SnapshotManifest = Paused, string(manifest)
	rec.SlotAddr, rec.SlotNetns = netip.Addr{}, ""
	data, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return "", nil, err
	}
	if err := durable.WriteFile(filepath.Join(tmp, recordFile), data, 0o600); err != nil {
		return "", nil, err
	}
	if err := durable.SyncTree(tmp); err != nil {
		return "", nil, err
	}
	ok = true
	return tmp, &rec, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// removeImports deletes what imports an earlier run of the agent did not finish.
func (m *Manager) removeImports() {
	ents, _ := os.ReadDir(m.cfg.DataDir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), importPrefix) {
			os.RemoveAll(filepath.Join(m.cfg.DataDir, e.Name()))
		}
	}
}
