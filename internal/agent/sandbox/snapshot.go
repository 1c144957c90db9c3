package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/conntrack"
	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
)

// ErrSnapshotUnsupported means the runtime driver cannot snapshot running sandboxes.
var ErrSnapshotUnsupported = errors.New("this runtime cannot snapshot sandboxes")

// ErrSnapshotNotFound means no snapshot on this host has the ID.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// snapshotsDir holds one directory per snapshot under the data dir: <DataDir>/.snapshots/<id>/
// with the driver's image and snapshotMetaFile. Its name is no sandbox ID, so Recover never
// takes it for a sandbox.
const (
	snapshotsDir     = ".snapshots"
	snapshotImageDir = "image"
	snapshotMetaFile = "snapshot.json"
)

// snapshotMeta is what a snapshot's directory records besides the image: what a sandbox
// started from it must be (the image only restores into the same template version and disk
// size) and the credentials its copied envd holds until the new sandbox's /init.
type snapshotMeta struct {
	ID              string         `json:"id"`
	SourceID        string         `json:"sourceID"`
	Template        string         `json:"template"`
	TemplateVersion string         `json:"templateVersion"`
	CPUs            int            `json:"cpus"`
	MemoryMiB       int            `json:"memoryMiB"`
	DiskMiB         int            `json:"diskMiB"`
	Egress          netslot.Egress `json:"egress"`
	EgressDomains   []string       `json:"egressDomains,omitempty"`
	SourceToken     string         `json:"sourceToken,omitempty"`
	SourceSecret    string         `json:"sourceSecret"`
	CreatedAt       time.Time      `json:"createdAt"`
}

// SnapshotInfo describes a snapshot kept on this host.
type SnapshotInfo struct {
	ID        string
	SourceID  string
	Template  string
	CPUs      int
	MemoryMiB int
	DiskMiB   int
	SizeBytes int64
	CreatedAt time.Time
}

func (m *Manager) snapshotDir(id string) string {
	return filepath.Join(m.cfg.DataDir, snapshotsDir, id)
}

// Snapshot copies running sandbox id into a snapshot named snapID on this host: files,
// memory and running processes, written durably under the data dir (complete or absent). The
// sandbox refuses other operations while its checkpoint is taken and runs on as before; the
// snapshot outlives it. New sandboxes start from it with CreateRequest.SnapshotID.
func (m *Manager) Snapshot(ctx context.Context, id, snapID string) (SnapshotInfo, error) {
	sd, ok := m.cfg.Driver.(runtime.SnapshotDriver)
	if !ok {
		return SnapshotInfo{}, ErrSnapshotUnsupported
	}
	if !idRE.MatchString(snapID) {
		return SnapshotInfo{}, fmt.Errorf("%w: snapshot id %q must be lower-case letters, digits and dashes, at most 63", ErrInvalid, snapID)
	}
	final := m.snapshotDir(snapID)
	if _, err := os.Stat(final); err == nil {
		return SnapshotInfo{}, fmt.Errorf("%w: snapshot %s exists", ErrInvalid, snapID)
	}
	rec, err := m.begin(id, "snapshot", Running, Forking)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer m.settle(rec, Running)
	tpl, err := m.cfg.Templates(rec.Template)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: template %q: %w", id, rec.Template, err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; left only by a failure

	// As for a fork: the checkpoint closes envd's host socket, so streams to envd end
	// cleanly first; other ports stay open.
	if _, err := m.cfg.Conns.Drain(ctx, id, conntrack.Policy{Grace: DrainGrace, EndReason: snapshotEndReason(id), Port: runtime.EnvdPort}); err != nil {
		m.cfg.Conns.Resume(id)
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: drain connections: %w", id, err)
	}
	start := time.Now()
	err = sd.Snapshot(ctx, m.specFor(rec, tpl), filepath.Join(tmp, snapshotImageDir))
	m.cfg.Conns.Resume(id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	meta := snapshotMeta{
		ID: snapID, SourceID: id, Template: rec.Template, TemplateVersion: tpl.Version,
		CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB, DiskMiB: rec.DiskMiB,
		Egress: rec.Egress, EgressDomains: slices.Clone(rec.EgressDomains),
		SourceToken: rec.AccessToken, SourceSecret: rec.EnvdSecret, CreatedAt: time.Now().UTC(),
	}
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := durable.WriteFile(filepath.Join(tmp, snapshotMetaFile), data, 0o600); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	if err := durable.ReplaceDir(tmp, final); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	info := meta.info(dirSize(final))
	m.cfg.Log.Info("sandbox snapshot taken", "sandbox", id, "snapshot", snapID, "bytes", info.SizeBytes, "took", time.Since(start))
	return info, nil
}

func (s snapshotMeta) info(size int64) SnapshotInfo {
	return SnapshotInfo{ID: s.ID, SourceID: s.SourceID, Template: s.Template, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB,
		DiskMiB: s.DiskMiB, SizeBytes: size, CreatedAt: s.CreatedAt}
}

// loadSnapshot reads a snapshot's record; ErrSnapshotNotFound if there is none.
func (m *Manager) loadSnapshot(id string) (snapshotMeta, error) {
	if !idRE.MatchString(id) {
		return snapshotMeta{}, fmt.Errorf("%w: snapshot id %q must be lower-case letters, digits and dashes, at most 63", ErrInvalid, id)
	}
	data, err := os.ReadFile(filepath.Join(m.snapshotDir(id), snapshotMetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return snapshotMeta{}, fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
	}
	if err != nil {
		return snapshotMeta{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	var meta snapshotMeta
	if err := json.Unmarshal(data, &meta); err != nil {
		return snapshotMeta{}, fmt.Errorf("snapshot %s: parse %s: %w", id, snapshotMetaFile, err)
	}
	if meta.ID != id {
		return snapshotMeta{}, fmt.Errorf("snapshot %s: %s names snapshot %q", id, snapshotMetaFile, meta.ID)
	}
	return meta, nil
}

// Snapshots lists the snapshots kept on this host, oldest first.
func (m *Manager) Snapshots() ([]SnapshotInfo, error) {
	ents, err := os.ReadDir(filepath.Join(m.cfg.DataDir, snapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	for _, e := range ents {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		meta, err := m.loadSnapshot(e.Name())
		if err != nil {
			m.cfg.Log.Warn("unreadable snapshot", "snapshot", e.Name(), "err", err)
			continue
		}
		out = append(out, meta.info(dirSize(m.snapshotDir(e.Name()))))
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// DeleteSnapshot removes a snapshot. Sandboxes started from it keep running: a start loads
// everything it needs from the snapshot (see runtime.SnapshotDriver), and a start in
// progress makes the delete wait for it.
func (m *Manager) DeleteSnapshot(ctx context.Context, id string) error {
	if _, err := m.loadSnapshot(id); err != nil {
		return err
	}
	unlock, err := m.lockSnapshot(ctx, id, true)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := m.loadSnapshot(id); err != nil { // deleted while this one waited
		return err
	}
	// Renamed away first: a crash mid-removal leaves no half snapshot under its name.
	gone := m.snapshotDir(id) + ".deleting"
	if err := durable.Rename(m.snapshotDir(id), gone); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
		}
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	m.cfg.Log.Info("snapshot deleted", "snapshot", id)
	return nil
}

// lockSnapshot takes snapshot id for a start (shared) or a delete (exclusive), waiting for
// the other kind to finish or ctx to end.
func (m *Manager) lockSnapshot(ctx context.Context, id string, exclusive bool) (func(), error) {
	for {
		m.mu.Lock()
		n := m.snapUsers[id]
		if (exclusive && n == 0) || (!exclusive && n >= 0) {
			if exclusive {
				m.snapUsers[id] = -1
			} else {
				m.snapUsers[id] = n + 1
			}
			m.mu.Unlock()
			return func() {
				m.mu.Lock()
				if exclusive || m.snapUsers[id] == 1 {
					delete(m.snapUsers, id)
				} else {
					m.snapUsers[id]--
				}
				m.mu.Unlock()
			}, nil
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("snapshot %s is in use: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startFromSnapshot is Create's runtime step for a sandbox started from snapshot snapID: it
// checks the request against what the image can restore into and starts it.
func (m *Manager) startFromSnapshot(ctx context.Context, rec *record, snapID string, tpl runtime.Template) error {
	sd, ok := m.cfg.Driver.(runtime.SnapshotDriver)
	if !ok {
		return ErrSnapshotUnsupported
	}
	unlock, err := m.lockSnapshot(ctx, snapID, false)
	if err != nil {
		return err
	}
	defer unlock()
	// Read under the lock: a delete that ran meanwhile has removed it.
	meta, err := m.loadSnapshot(snapID)
	if err != nil {
		return err
	}
	if meta.Template != rec.Template {
		return fmt.Errorf("%w: snapshot %s is of template %q, not %q", ErrInvalid, snapID, meta.Template, rec.Template)
	}
	if meta.TemplateVersion != tpl.Version {
		return fmt.Errorf("%w: snapshot %s was taken of template %s version %s; this host has version %s, which it cannot restore into",
			ErrInvalid, snapID, meta.Template, meta.TemplateVersion, tpl.Version)
	}
	spec := m.specFor(rec, tpl)
	if err := sd.StartFromSnapshot(ctx, spec, filepath.Join(m.snapshotDir(snapID), snapshotImageDir), meta.SourceSecret); err != nil {
		return fmt.Errorf("create sandbox %s from snapshot %s: %w", rec.ID, snapID, err)
	}
	rec.envd = newEnvdClient(spec.EnvdAddr(), rec.AccessToken)
	// The copy's envd holds the source's token and secret; /init gives it the new sandbox's.
	return m.initEnvd(ctx, rec, meta.SourceToken, meta.SourceSecret)
}

// snapshotShape fills a create request from snapshot snapID: a sandbox started from it has
// its template and disk size (the image restores into nothing else).
func (m *Manager) snapshotShape(req *CreateRequest) error {
	meta, err := m.loadSnapshot(req.SnapshotID)
	if err != nil {
		return err
	}
	if req.Template == "" {
		req.Template = meta.Template
	}
	if req.DiskMiB <= 0 {
		req.DiskMiB = meta.DiskMiB
	}
	if req.DiskMiB != meta.DiskMiB {
		return fmt.Errorf("%w: snapshot %s has a %d MiB disk; a sandbox started from it cannot have %d MiB", ErrInvalid, req.SnapshotID, meta.DiskMiB, req.DiskMiB)
	}
	return nil
}

// cleanSnapshots removes what an interrupted snapshot or delete left in the snapshots dir.
func (m *Manager) cleanSnapshots() {
	dir := filepath.Join(m.cfg.DataDir, snapshotsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, ".deleting") || strings.HasSuffix(n, ".old") {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				m.cfg.Log.Warn("remove leftover of an interrupted snapshot", "path", n, "err", err)
			}
		}
	}
}

// dirSize is the bytes the files under dir take (apparent sizes; 0 if unreadable).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// snapshotEndReason is what streams to envd of a sandbox being snapshotted end with.
func snapshotEndReason(id string) string {
	return fmt.Sprintf("sandbox %s is being snapshotted: its processes keep running; reconnect now", id)
}
