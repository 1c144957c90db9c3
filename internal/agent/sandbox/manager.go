package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/conntrack"
	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/envd"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
)

// Timing of the pause sequence, from DESIGN.md.
const (
	// DrainGrace is how long proxied requests in flight get to finish before they are
	// closed. Streams (WebSockets, command output, watchers) do not wait for it: a pause or
	// fork ends them at once.
	DrainGrace = 5 * time.Second
	// guestReclaimTimeout bounds the sync and page-cache drop inside the guest.
	guestReclaimTimeout = 30 * time.Second
	initTimeout         = 10 * time.Second
)

// TemplateFunc resolves a template name to what the driver boots.
type TemplateFunc func(name string) (runtime.Template, error)

// Config wires a Manager.
type Config struct {
	// DataDir holds one directory per sandbox: <DataDir>/<id>/.
	DataDir   string
	Driver    runtime.Driver
	Slots     *netslot.Pool
	SlotOpts  []netslot.AcquireOption
	Conns     *conntrack.Tracker
	Templates TemplateFunc
	Log       *slog.Logger
	// DefaultUser and DefaultWorkdir are sent to envd's /init; the base template's user.
	DefaultUser    string
	DefaultWorkdir string
	// DefaultDiskMiB is the disk size of sandboxes whose create names none.
	DefaultDiskMiB int
	// DropConnections, when set, closes the host-side connections a sandbox opened (the
	// egress inspector's). It is called with the sandbox's address when its egress policy
	// is replaced, so a tighter policy also ends what was allowed before, and when its slot
	// is released, before the address can go to another sandbox.
	DropConnections func(guest netip.Addr)
	// Artifacts, when set, is the store paused sandboxes are uploaded to, so that another
	// agent sharing it can resume them (ResumeFrom); nil keeps snapshots on this host.
	Artifacts artifacts.Store
	// FetchTemplate, when set, installs template name from the artifacts store by the digest
	// of its manifest, for a create of a template this host lacks (CreateRequest.
	// TemplateArtifact).
	FetchTemplate func(ctx context.Context, name, manifest string) error
	// MaxActive caps the sandboxes that are not paused (starting, running, resuming, ...):
	// a create, fork or resume past it fails with ErrHostFull. 0 means no cap. Pooled
	// sandboxes (WarmPool) count towards it too, and give way to creates that need room.
	MaxActive int
	// WarmPool, when it names templates, keeps sandboxes of them booted ahead of need for
	// creates to claim (see StartWarmPool).
	WarmPool WarmPool
}

// ErrHostFull: the host runs as many sandboxes as its agent allows (--max-sandboxes).
var ErrHostFull = errors.New("host is at its sandbox limit")

// admitLocked refuses one more active sandbox past MaxActive. Call with m.mu held, in the
// same critical section that makes the sandbox active, so concurrent creates cannot both
// take the last place.
func (m *Manager) admitLocked() error {
	if m.cfg.MaxActive <= 0 {
		return nil
	}
	n := m.activeLocked()
	if n >= m.cfg.MaxActive {
		return fmt.Errorf("%w: %d of %d sandboxes are running (raise the agent's --max-sandboxes, or pause or kill some)", ErrHostFull, n, m.cfg.MaxActive)
	}
	return nil
}

// CreateRequest describes a new sandbox.
type CreateRequest struct {
	ID          string
	Template    string
	CPUs        int
	MemoryMiB   int
	DiskMiB     int // bounds root filesystem writes; 0 takes Config.DefaultDiskMiB
	EnvVars     map[string]string
	AccessToken string
	Metadata    map[string]string
	// Egress is the sandbox's own outbound policy; the zero value allows what the host allows.
	Egress netslot.Egress
	// EgressDomains are domain patterns let through Egress.Deny on TCP ports 80 and 443,
	// judged by the agent's egress inspector.
	EgressDomains []string
	// SnapshotID, when set, starts the sandbox from that snapshot on this host (see
	// Snapshot) instead of booting Template: files, memory and processes as they were. The
	// template and disk size must be the snapshot's (empty and 0 take them).
	SnapshotID string
	// TemplateArtifact, when set, names the template's build in the artifacts store: a host
	// that lacks the template fetches it (Config.FetchTemplate) before booting it.
	TemplateArtifact string
}

// Info is a snapshot of a sandbox's public state.
type Info struct {
	ID        string            `json:"id"`
	Template  string            `json:"template"`
	State     State             `json:"state"`
	CPUs      int               `json:"cpus"`
	MemoryMiB int               `json:"memoryMiB"`
	DiskMiB   int               `json:"diskMiB,omitempty"` // 0 in records from before disk limits: unbounded
	CreatedAt time.Time         `json:"createdAt"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Egress    netslot.Egress    `json:"egress"`
	// EgressDomains are the domain patterns of the policy (see CreateRequest).
	EgressDomains []string `json:"egressDomains,omitempty"`
	// EnvdAddr is where the host reaches envd; invalid while the sandbox has no slot.
	EnvdAddr netip.AddrPort `json:"-"`
	// SnapshotManifest, while paused, is the digest of the manifest of its paused state in
	// the artifacts store (see export); empty when the snapshot is on this host only.
	SnapshotManifest string `json:"snapshotManifest,omitempty"`
}

// record is what the manager keeps per sandbox; the persisted part survives agent restarts
// so paused sandboxes can still be resumed.
type record struct {
	Info
	EnvVars     map[string]string `json:"envVars,omitempty"`
	AccessToken string            `json:"accessToken,omitempty"`
	// EnvdSecret is the credential of envd's internal routes in this sandbox (see
	// newEnvdSecret). It is kept here, so it survives an agent restart, and nowhere else:
	// the control plane never sees it.
	EnvdSecret string `json:"envdSecret,omitempty"`
	// FilesystemOnly marks a pause that kept only the disk: resuming boots the sandbox
	// afresh on it (see PauseFilesystem).
	FilesystemOnly bool `json:"filesystemOnly,omitempty"`
	// SlotAddr and SlotNetns are the network slot the sandbox had when the record was
	// saved (unset once paused): an agent restarted in the middle of a pause or resume
	// reaches envd there to finish the pause (see Recover).
	SlotAddr  netip.Addr `json:"slotAddr,omitzero"`
	SlotNetns string     `json:"slotNetns,omitempty"`
	// User and Workdir are the template's default user and working directory (API builds);
	// empty means the agent's.
	User    string `json:"user,omitempty"`
	Workdir string `json:"workdir,omitempty"`
	// RuntimeID, for a sandbox claimed from the warm pool, is the ID the runtime booted it
	// under, which it keeps until the sandbox is next paused (a resume restores it under its
	// own ID); empty means the sandbox's ID.
	RuntimeID string `json:"runtimeID,omitempty"`

	slot *netslot.Slot
	envd *envdClient
}

// Manager owns the sandboxes of one agent. It is safe for concurrent use; each sandbox's
// lifecycle operations are serialised by its state, and refused while it is transitional.
type Manager struct {
	cfg Config

	mu          sync.Mutex
	sandboxes   map[string]*record
	quarantined []Quarantined
	// snapUsers counts the starts in progress from each snapshot; -1 while it is deleted.
	snapUsers map[string]int
	warm      warmState
}

// Quarantined is a sandbox directory whose record could not be loaded at start: it was moved,
// snapshot and all, to Path (under <DataDir>/.quarantine) for an operator to inspect.
type Quarantined struct {
	ID   string
	Path string
	Err  string
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// New returns a Manager. Call Recover before serving requests.
func New(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Manager{cfg: cfg, sandboxes: map[string]*record{}, snapUsers: map[string]int{}}
}

// Recover brings the host to a clean state after a previous run of the agent, which may
// have been killed at any instant. A pause or resume it was in the middle of is finished
// first, so the sandbox ends up paused with a complete snapshot (see finishInterrupted); then
// leftover runtime processes, slots and connections are removed; sandboxes that were running
// are gone (their processes died with the reclaim) and are destroyed; paused sandboxes are
// loaded back, ready to resume. A record that cannot be loaded is quarantined with its
// snapshot, never deleted (see quarantine).
func (m *Manager) Recover(ctx context.Context) error {
	if err := os.MkdirAll(m.cfg.DataDir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(m.cfg.DataDir)
	if err != nil {
		return err
	}
	type found struct {
		id  string
		rec *record // nil: the sandbox never saved a record
	}
	var all []found
	for _, e := range entries {
		// Only sandbox IDs: the quarantine dir and strays are not sandboxes.
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		id := e.Name()
		rec, err := m.load(id)
		if errors.Is(err, fs.ErrNotExist) {
			// A create that never finished: a pause saves the record before it snapshots,
			// so there is no snapshot here either.
			all = append(all, found{id: id})
			continue
		}
		if err != nil {
			m.quarantine(id, err)
			continue
		}
		if rec.State == Pausing || rec.State == Resuming {
			m.finishInterrupted(ctx, rec)
		}
		all = append(all, found{id: id, rec: rec})
	}
	m.reportQuarantine()
	m.cleanSnapshots()
	m.removeImports()
	if err := m.cfg.Driver.Reclaim(ctx); err != nil {
		return fmt.Errorf("reclaim runtime: %w", err)
	}
	m.removeWarmLeftovers(ctx)
	if err := m.cfg.Slots.Reclaim(ctx); err != nil {
		return fmt.Errorf("reclaim network slots: %w", err)
	}
	for _, f := range all {
		if f.rec != nil && f.rec.State == Paused {
			m.mu.Lock()
			m.sandboxes[f.id] = f.rec
			m.mu.Unlock()
			m.cfg.Log.Info("recovered paused sandbox", "sandbox", f.id)
			continue
		}
		st := State("")
		if f.rec != nil {
			st = f.rec.State
		}
		m.cfg.Log.Info("removing sandbox that was not paused when the previous agent stopped", "sandbox", f.id, "state", st)
		if err := m.cfg.Driver.Destroy(ctx, m.spec(f.rec, f.id)); err != nil {
			m.cfg.Log.Warn("destroy leftover sandbox", "sandbox", f.id, "err", err)
		}
		os.RemoveAll(m.dir(f.id))
	}
	return nil
}

// finishInterrupted completes the pause or resume the previous agent was killed in: the
// driver keeps a snapshot that is complete, completes one its runtime finished writing, or
// snapshots the sandbox that still runs (it reaches envd at the slot the record names, which
// is still in place before the reclaim). On success the sandbox is paused; otherwise nothing
// of it is left to keep (no snapshot, no process) and Recover destroys it.
func (m *Manager) finishInterrupted(ctx context.Context, rec *record) {
	log := m.cfg.Log.With("sandbox", rec.ID, "interrupted", rec.State)
	rd, ok := m.cfg.Driver.(runtime.PauseRecoverer)
	if !ok {
		log.Warn("the runtime cannot finish an interrupted pause; the sandbox is lost")
		return
	}
	// A template removed since is no reason to lose the sandbox: pausing needs none.
	tpl, err := m.cfg.Templates(rec.Template)
	if err != nil {
		log.Warn("finish interrupted pause without its template", "err", fmt.Errorf("template %q: %w", rec.Template, err))
	}
	// A filesystem-only pause whose saved disk is complete, or a resume of one killed before
	// it removed that disk: paused as it was (whatever a cut-off cold boot wrote since was
	// never acknowledged; the reclaim stops it).
	if fp, ok := m.cfg.Driver.(runtime.FilesystemPauser); ok && rec.FilesystemOnly && fp.HasFilesystemSnapshot(m.specFor(rec, tpl)) {
		rec.State, rec.SlotAddr, rec.SlotNetns, rec.RuntimeID = Paused, netip.Addr{}, "", ""
		if err := m.save(rec); err != nil {
			log.Error("persist paused sandbox", "err", err)
		}
		log.Info("finished interrupted pause: the sandbox is paused (filesystem only)")
		return
	}
	// Whatever the pause asked for, a recovered one keeps the memory.
	rec.FilesystemOnly = false
	if err := rd.RecoverPause(ctx, m.specFor(rec, tpl)); err != nil {
		log.Error("finish interrupted pause", "err", err)
		return
	}
	rec.State, rec.SlotAddr, rec.SlotNetns, rec.RuntimeID = Paused, netip.Addr{}, "", ""
	if err := m.save(rec); err != nil {
		log.Error("persist paused sandbox", "err", err)
	}
	log.Info("finished interrupted pause: the sandbox is paused")
}

// quarantineDir holds sandbox dirs whose record could not be loaded; its name is no sandbox ID.
const quarantineDir = ".quarantine"

// quarantine moves a sandbox dir whose record does not load (torn, hand-edited, of another
// version) out of the way, snapshot included, and reports it: deleting it would lose a
// paused sandbox for good, keeping it in place would fail every start the same way.
func (m *Manager) quarantine(id string, cause error) {
	qdir := filepath.Join(m.cfg.DataDir, quarantineDir)
	dst := filepath.Join(qdir, id+"-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
	err := os.MkdirAll(qdir, 0o700)
	if err == nil {
		err = durable.Rename(m.dir(id), dst)
	}
	if err != nil {
		// Left in place: the next start tries again; the sandbox is not served meanwhile.
		m.cfg.Log.Error("sandbox record unreadable; could not quarantine it, left in place", "sandbox", id, "load_err", cause, "err", err)
		dst = m.dir(id)
	} else {
		m.cfg.Log.Error("sandbox record unreadable; moved to quarantine with its snapshot", "sandbox", id, "load_err", cause, "path", dst)
	}
	m.mu.Lock()
	m.quarantined = append(m.quarantined, Quarantined{ID: id, Path: dst, Err: cause.Error()})
	m.mu.Unlock()
}

// reportQuarantine logs, at every start, how many quarantined sandbox dirs wait for an
// operator, so one found by an earlier start is not forgotten.
func (m *Manager) reportQuarantine() {
	ents, err := os.ReadDir(filepath.Join(m.cfg.DataDir, quarantineDir))
	if err != nil || len(ents) == 0 {
		return
	}
	m.cfg.Log.Error("quarantined sandbox dirs need an operator: inspect, then remove or restore them",
		"dir", filepath.Join(m.cfg.DataDir, quarantineDir), "count", len(ents))
}

// Quarantined returns the sandbox dirs this agent's start moved to quarantine.
func (m *Manager) Quarantined() []Quarantined {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.quarantined)
}

// DropTemplate deletes what the driver keeps of template version name
// (runtime.TemplateDropper); drivers that keep nothing per version have nothing to do.
func (m *Manager) DropTemplate(ctx context.Context, name string) error {
	if d, ok := m.cfg.Driver.(runtime.TemplateDropper); ok {
		return d.DropTemplate(ctx, name)
	}
	return nil
}

// StartSnapshots reports whether the driver boots templates with a start command into a
// snapshot with it running (runtime.StartSnapshotDriver).
func (m *Manager) StartSnapshots() bool {
	d, ok := m.cfg.Driver.(runtime.StartSnapshotDriver)
	return ok && d.StartSnapshots()
}

// openTemplate resolves template name; when this host lacks it and artifact names its build
// in the artifacts store, it is fetched first (Config.FetchTemplate). Creates and the warm
// pool both boot what this returns.
func (m *Manager) openTemplate(ctx context.Context, name, artifact string) (runtime.Template, error) {
	tpl, err := m.cfg.Templates(name)
	if err != nil && artifact != "" && m.cfg.FetchTemplate != nil {
		// Not built here: fetched from the store the other hosts uploaded it to.
		if ferr := m.cfg.FetchTemplate(ctx, name, artifact); ferr != nil {
			return runtime.Template{}, fmt.Errorf("template %q is not on this host, and fetching it failed: %w", name, ferr)
		}
		tpl, err = m.cfg.Templates(name)
	}
	if err != nil {
		return runtime.Template{}, fmt.Errorf("%w: template %q: %v", ErrInvalid, name, err)
	}
	return tpl, nil
}

// Create boots a sandbox and returns once envd is initialised. Creating an ID that exists
// returns the existing sandbox's info if it matches, so a retried create is harmless.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (Info, error) {
	if !idRE.MatchString(req.ID) {
		return Info{}, fmt.Errorf("%w: sandbox id %q must be lower-case letters, digits and dashes, at most 63", ErrInvalid, req.ID)
	}
	if req.CPUs < 1 || req.MemoryMiB < 64 {
		return Info{}, fmt.Errorf("%w: a sandbox needs at least 1 CPU and 64 MiB of memory (got %d CPUs, %d MiB)", ErrInvalid, req.CPUs, req.MemoryMiB)
	}
	if req.SnapshotID != "" {
		if err := m.snapshotShape(&req); err != nil {
			return Info{}, err
		}
	}
	artifact := req.TemplateArtifact
	if req.SnapshotID != "" {
		artifact = "" // the snapshot's host has its template
	}
	tpl, err := m.openTemplate(ctx, req.Template, artifact)
	if err != nil {
		return Info{}, err
	}
	if req.DiskMiB <= 0 {
		req.DiskMiB = tpl.DiskMiB
	}
	if req.DiskMiB <= 0 {
		req.DiskMiB = m.cfg.DefaultDiskMiB
	}
	rec := &record{
		Info: Info{
			ID: req.ID, Template: req.Template, State: Starting, CPUs: req.CPUs, MemoryMiB: req.MemoryMiB, DiskMiB: req.DiskMiB,
			CreatedAt: time.Now().UTC(), Metadata: maps.Clone(req.Metadata), Egress: req.Egress,
			EgressDomains: slices.Clone(req.EgressDomains),
		},
		EnvVars:     withTemplateEnv(tpl.Env, req.EnvVars),
		AccessToken: req.AccessToken,
		EnvdSecret:  newEnvdSecret(),
		User:        tpl.User,
		Workdir:     tpl.Workdir,
	}
	m.mu.Lock()
	if existing, ok := m.sandboxes[req.ID]; ok {
		info := existing.Info
		m.mu.Unlock()
		if existing.State == Starting {
			return info, &BusyError{ID: req.ID, State: Starting, Op: "create"}
		}
		return info, nil
	}
	if err := m.admitLocked(); err != nil {
		m.mu.Unlock()
		return Info{}, err
	}
	m.sandboxes[req.ID] = rec
	pooled, victim := m.takeWarmLocked(req, tpl)
	m.mu.Unlock()
	if victim != nil {
		go m.dropForRoom(context.WithoutCancel(ctx), victim)
	}

	fail := func(err error) (Info, error) {
		m.teardown(context.WithoutCancel(ctx), rec, tpl)
		m.mu.Lock()
		delete(m.sandboxes, req.ID)
		m.mu.Unlock()
		return Info{}, err
	}
	if pooled != nil {
		start := time.Now()
		err := m.adopt(ctx, rec, pooled, tpl)
		if err == nil {
			m.cfg.Log.Info("warm pool: sandbox claimed", "sandbox", req.ID, "template", req.Template, "runtime_id", pooled.id, "took", time.Since(start))
			return m.settle(rec, Running)
		}
		// Whatever the pooled sandbox got to, a fresh boot still serves the create.
		m.cfg.Log.Warn("warm pool: claim failed; booting afresh", "sandbox", req.ID, "runtime_id", pooled.id, "err", err)
		m.teardown(context.WithoutCancel(ctx), rec, tpl)
		m.mu.Lock()
		rec.RuntimeID, rec.envd = "", nil
		m.mu.Unlock()
	}
	if err := m.makeDir(req.ID); err != nil {
		return fail(fmt.Errorf("create sandbox dir: %w", err))
	}
	slot, err := m.acquireSlot(ctx, rec)
	if err != nil {
		return fail(fmt.Errorf("acquire network slot: %w", err))
	}
	rec.slot = slot
	if req.SnapshotID != "" {
		if err := m.startFromSnapshot(ctx, rec, req.SnapshotID, tpl); err != nil {
			return fail(err)
		}
		return m.settle(rec, Running)
	}
	spec := m.specFor(rec, tpl)
	if err := m.cfg.Driver.Create(ctx, spec); err != nil {
		return fail(fmt.Errorf("create sandbox %s: %w", req.ID, err))
	}
	rec.envd = newEnvdClient(spec.EnvdAddr(), req.AccessToken)
	// A new sandbox's envd holds no secret yet: this /init sets it.
	if err := m.initEnvd(ctx, rec, "", rec.EnvdSecret); err != nil {
		return fail(err)
	}
	return m.settle(rec, Running)
}

// ErrFilesystemPauseUnsupported means the runtime driver cannot pause keeping only the disk.
var ErrFilesystemPauseUnsupported = errors.New("this runtime cannot pause a sandbox keeping only its filesystem")

// Pause runs DESIGN.md's pause sequence. On any failure the sandbox is running again, as
// before the call, with nothing lost.
func (m *Manager) Pause(ctx context.Context, id string) (Info, error) {
	return m.pause(ctx, id, false)
}

// PauseFilesystem pauses keeping only the sandbox's disk: its memory and processes are
// dropped, and Resume boots it afresh on the saved filesystem. The rest is Pause's sequence.
func (m *Manager) PauseFilesystem(ctx context.Context, id string) (Info, error) {
	if _, ok := m.cfg.Driver.(runtime.FilesystemPauser); !ok {
		return Info{}, ErrFilesystemPauseUnsupported
	}
	return m.pause(ctx, id, true)
}

func (m *Manager) pause(ctx context.Context, id string, fsOnly bool) (Info, error) {
	rec, err := m.begin(id, "pause", Running, Pausing)
	if err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	rec.FilesystemOnly = fsOnly
	m.mu.Unlock()
	tpl, err := m.cfg.Templates(rec.Template)
	if err != nil {
		m.settle(rec, Running)
		return Info{}, fmt.Errorf("pause %s: template %q: %w", id, rec.Template, err)
	}
	// On disk before anything changes: an agent killed from here on finds "pausing" and
	// finishes the pause at its next start instead of destroying a running sandbox.
	if err := m.save(rec); err != nil {
		m.settle(rec, Running)
		return Info{}, fmt.Errorf("pause %s: persist: %w", id, err)
	}
	spec := m.specFor(rec, tpl)
	rollback := func(err error) (Info, error) {
		m.cfg.Conns.Resume(id)
		m.mu.Lock()
		rec.FilesystemOnly = false
		m.mu.Unlock()
		m.settle(rec, Running)
		return Info{}, fmt.Errorf("pause %s: %w", id, err)
	}

	// 2. drain proxy connections: streams end at once, requests in flight get the grace,
	// then the rest is force-closed.
	if forced, err := m.cfg.Conns.Drain(ctx, id, conntrack.Policy{Grace: DrainGrace, EndReason: pauseEndReason(id)}); err != nil {
		return rollback(fmt.Errorf("drain connections: %w", err))
	} else if forced > 0 {
		m.cfg.Log.Info("force-closed connections", "sandbox", id, "count", forced)
	}
	// 3. guest reclaim: flush writes and drop the page cache so the snapshot holds only
	// memory the guest really uses.
	rctx, cancel := context.WithTimeout(ctx, guestReclaimTimeout)
	code, out, err := rec.envd.run(rctx, "sync && (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; sync")
	cancel()
	if err != nil || code != 0 {
		return rollback(fmt.Errorf("sync guest filesystems (exit %d, %q): %v", code, out, err))
	}
	// 4–5. freeze and snapshot.
	rec.envd.close()
	if fsOnly {
		err = m.cfg.Driver.(runtime.FilesystemPauser).PauseFilesystem(ctx, spec)
	} else {
		err = m.cfg.Driver.Pause(ctx, spec)
	}
	if err != nil {
		return rollback(err)
	}
	// The container is gone: a resume restores the sandbox under its own ID.
	m.mu.Lock()
	rec.RuntimeID = ""
	m.mu.Unlock()
	// 6. release the slot: the snapshot is restored into whatever slot is free on resume.
	m.releaseSlot(ctx, rec)
	// 7. with an artifacts store, upload it for other hosts, still pausing so that no resume
	// consumes the snapshot underneath. A failed upload fails nothing: the sandbox is
	// paused here and resumes here only.
	manifest, err := m.export(ctx, rec, tpl, fsOnly)
	if err != nil {
		m.cfg.Log.Warn("upload paused sandbox: it can resume on this host only", "sandbox", id, "err", err)
	}
	m.mu.Lock()
	rec.State, rec.SnapshotManifest = Paused, string(manifest)
	m.mu.Unlock()
	if err := m.save(rec); err != nil {
		m.cfg.Log.Error("persist paused sandbox", "sandbox", id, "err", err)
	}
	return rec.Info, nil
}

// Resume restores a paused sandbox. On failure it stays paused with its snapshot.
func (m *Manager) Resume(ctx context.Context, id string) (Info, error) {
	rec, err := m.begin(id, "resume", Paused, Resuming)
	if err != nil {
		return Info{}, err
	}
	fail := func(err error) (Info, error) {
		m.releaseSlot(context.WithoutCancel(ctx), rec)
		m.settle(rec, Paused)
		return Info{}, fmt.Errorf("resume %s: %w", id, err)
	}
	tpl, err := m.cfg.Templates(rec.Template)
	if err != nil {
		return fail(fmt.Errorf("template %q: %w", rec.Template, err))
	}
	slot, err := m.acquireSlot(ctx, rec)
	if err != nil {
		return fail(fmt.Errorf("acquire network slot: %w", err))
	}
	rec.slot = slot
	if err := slot.RestoreGuestAddr(ctx); err != nil {
		return fail(fmt.Errorf("restore guest address: %w", err))
	}
	// With the slot: an agent killed from here on finds "resuming" and the slot the
	// restored sandbox runs in, and pauses it again at its next start.
	if err := m.save(rec); err != nil {
		return fail(fmt.Errorf("persist: %w", err))
	}
	spec := m.specFor(rec, tpl)
	if rec.FilesystemOnly {
		return m.resumeFilesystem(ctx, rec, spec, fail)
	}
	if err := m.cfg.Driver.Resume(ctx, spec); err != nil {
		return fail(err)
	}
	rec.envd = newEnvdClient(spec.EnvdAddr(), rec.AccessToken)
	if err := m.initEnvd(ctx, rec, rec.AccessToken, rec.EnvdSecret); err != nil {
		// The guest is up but unusable: put it back on disk rather than leave it half-resumed.
		if perr := m.cfg.Driver.Pause(context.WithoutCancel(ctx), spec); perr != nil {
			m.cfg.Log.Error("re-pause after failed init", "sandbox", id, "err", perr)
		}
		return fail(err)
	}
	m.cfg.Conns.Resume(id)
	return m.settle(rec, Running)
}

// resumeFilesystem boots a sandbox paused with PauseFilesystem on its saved disk: a new
// kernel, no processes, envd initialised as on a create.
func (m *Manager) resumeFilesystem(ctx context.Context, rec *record, spec runtime.Spec, fail func(error) (Info, error)) (Info, error) {
	fp, ok := m.cfg.Driver.(runtime.FilesystemPauser)
	if !ok {
		return fail(ErrFilesystemPauseUnsupported)
	}
	if err := fp.ResumeFilesystem(ctx, spec); err != nil {
		return fail(err)
	}
	rec.envd = newEnvdClient(spec.EnvdAddr(), rec.AccessToken)
	// A booted envd holds no token or secret yet: this /init sets them.
	if err := m.initEnvd(ctx, rec, "", rec.EnvdSecret); err != nil {
		if perr := fp.PauseFilesystem(context.WithoutCancel(ctx), spec); perr != nil {
			m.cfg.Log.Error("re-pause after failed init", "sandbox", rec.ID, "err", perr)
		}
		return fail(err)
	}
	m.mu.Lock()
	rec.FilesystemOnly = false
	m.mu.Unlock()
	m.cfg.Conns.Resume(rec.ID)
	return m.settle(rec, Running)
}

// Destroy stops a running or paused sandbox and removes all it had.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	m.mu.Lock()
	rec, ok := m.sandboxes[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if rec.State != Running && rec.State != Paused {
		st := rec.State
		m.mu.Unlock()
		return &BusyError{ID: id, State: st, Op: "destroy"}
	}
	rec.State = Stopping
	m.mu.Unlock()

	// A kill cuts every connection at once, streams included: the SDKs tell a killed sandbox
	// from a network failure by a cut connection followed by a failed health check.
	m.cfg.Conns.Drain(ctx, id, conntrack.Policy{})
	tpl, _ := m.cfg.Templates(rec.Template)
	err := m.teardown(ctx, rec, tpl)
	m.mu.Lock()
	rec.State = Stopped
	delete(m.sandboxes, id)
	m.mu.Unlock()
	m.cfg.Conns.Forget(id)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	return nil
}

// Get returns a sandbox's info.
func (m *Manager) Get(id string) (Info, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.sandboxes[id]
	if !ok {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return rec.Info, nil
}

// List returns every sandbox, oldest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.sandboxes))
	for _, rec := range m.sandboxes {
		out = append(out, rec.Info)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Target is where the proxy reaches a port of a running sandbox.
type Target struct {
	Addr netip.AddrPort
	// Socket is envd's host Unix socket, for envd's port on drivers that have one: the
	// same server as Addr, off the sandbox's network stack. Empty otherwise.
	Socket string
}

// Target returns where to reach a port of a running sandbox, for the proxy. It fails with a
// BusyError while the sandbox is transitional or paused, and ErrNotFound for unknown IDs.
func (m *Manager) Target(id string, port uint16) (Target, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.sandboxes[id]
	if !ok {
		return Target{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if rec.State != Running {
		return Target{}, &BusyError{ID: id, State: rec.State, Op: "connection"}
	}
	t := Target{Addr: netip.AddrPortFrom(rec.slot.GuestAddr, port)}
	if sd, ok := m.cfg.Driver.(runtime.EnvdSocketDriver); ok && port == runtime.EnvdPort {
		t.Socket = sd.EnvdSocket(m.spec(rec, id))
	}
	return t, nil
}

// begin moves a sandbox from state from to state to, or explains why it cannot.
func (m *Manager) begin(id, op string, from, to State) (*record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if rec.State != from {
		return nil, &BusyError{ID: id, State: rec.State, Op: op}
	}
	if from == Paused && to != Paused {
		if err := m.admitLocked(); err != nil {
			return nil, err
		}
	}
	rec.State = to
	return rec, nil
}

// settle sets a sandbox's state after an operation and persists it.
func (m *Manager) settle(rec *record, st State) (Info, error) {
	m.mu.Lock()
	rec.State = st
	if st == Running {
		rec.SnapshotManifest = "" // a running sandbox has consumed its snapshot
	}
	if rec.slot != nil {
		rec.EnvdAddr = netip.AddrPortFrom(rec.slot.GuestAddr, envd.Port)
	} else {
		rec.EnvdAddr = netip.AddrPort{}
	}
	info := rec.Info
	m.mu.Unlock()
	if err := m.save(rec); err != nil {
		m.cfg.Log.Warn("persist sandbox", "sandbox", rec.ID, "err", err)
	}
	return info, nil
}

// initEnvd sends /init, presenting the access token and the agent secret envd holds now
// (a fork child's are its parent's), and gives envd the sandbox's own.
func (m *Manager) initEnvd(ctx context.Context, rec *record, presented, presentedSecret string) error {
	ictx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	now := time.Now().UTC()
	token := rec.AccessToken
	req := envd.InitRequest{
		EnvVars:        rec.EnvVars,
		AccessToken:    &token,
		Timestamp:      &now,
		DefaultUser:    m.cfg.DefaultUser,
		DefaultWorkdir: m.cfg.DefaultWorkdir,
		AgentSecret:    rec.EnvdSecret,
	}
	if rec.User != "" && rec.User != m.cfg.DefaultUser {
		req.DefaultUser, req.DefaultWorkdir = rec.User, "/home/"+rec.User
		if rec.User == "root" {
			req.DefaultWorkdir = "/root"
		}
	}
	if rec.Workdir != "" {
		req.DefaultWorkdir = rec.Workdir
	}
	if err := rec.envd.init(ictx, req, presented, presentedSecret); err != nil {
		return fmt.Errorf("initialise envd: %w", err)
	}
	return nil
}

// withTemplateEnv is the template's variables with the create request's on top.
func withTemplateEnv(tpl, req map[string]string) map[string]string {
	if len(tpl) == 0 {
		return maps.Clone(req)
	}
	env := maps.Clone(tpl)
	maps.Copy(env, req)
	return env
}

// teardown destroys the runtime side and the slot of a sandbox; errors are joined.
func (m *Manager) teardown(ctx context.Context, rec *record, tpl runtime.Template) error {
	if rec.envd != nil {
		rec.envd.close()
	}
	err := m.cfg.Driver.Destroy(ctx, m.specFor(rec, tpl))
	m.releaseSlot(ctx, rec)
	return errors.Join(err, os.RemoveAll(m.dir(rec.ID)))
}

// acquireSlot builds a network slot with the sandbox's egress policy in force before the
// sandbox can send anything.
func (m *Manager) acquireSlot(ctx context.Context, rec *record) (*netslot.Slot, error) {
	opts := append(slices.Clone(m.cfg.SlotOpts), netslot.WithEgress(slotEgress(rec.Egress, rec.EgressDomains)))
	return m.cfg.Slots.Acquire(ctx, rec.ID, opts...)
}

// slotEgress is what the slot enforces: with domain patterns, denied HTTP and HTTPS
// connections go to the egress inspector instead of being refused.
func slotEgress(e netslot.Egress, domains []string) netslot.Egress {
	e.Inspect = len(domains) > 0 && len(e.Deny) > 0
	return e
}

// EgressDomains returns the domain patterns of the running sandbox whose address is src,
// for the egress inspector; ok is false when no running sandbox has that address.
func (m *Manager) EgressDomains(src netip.Addr) (domains []string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rec := range m.sandboxes {
		if rec.State == Running && rec.slot != nil && rec.slot.GuestAddr == src {
			return slices.Clone(rec.EgressDomains), true
		}
	}
	return nil, false
}

// SetEgress replaces a sandbox's outbound policy: at once for a running sandbox (open
// connections included), from its next resume for a paused one. It is refused while the
// sandbox is transitional.
func (m *Manager) SetEgress(ctx context.Context, id string, e netslot.Egress, domains []string) (Info, error) {
	m.mu.Lock()
	rec, ok := m.sandboxes[id]
	if !ok {
		m.mu.Unlock()
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if rec.State != Running && rec.State != Paused {
		st := rec.State
		m.mu.Unlock()
		return Info{}, &BusyError{ID: id, State: st, Op: "change the network of"}
	}
	// The lock is held across the (short) nftables transaction so that no pause can
	// release the slot underneath it.
	if rec.State == Running {
		if err := m.cfg.Slots.SetEgress(ctx, rec.slot, slotEgress(e, domains)); err != nil {
			m.mu.Unlock()
			return Info{}, fmt.Errorf("set egress of %s: %w", id, err)
		}
	}
	rec.Egress, rec.EgressDomains = e, slices.Clone(domains)
	info := rec.Info
	if rec.State == Running {
		m.dropConnections(rec.slot)
	}
	m.mu.Unlock()
	if err := m.save(rec); err != nil {
		// The policy is in force; only a restart of the agent would lose it, and then
		// the sandbox (running) is gone or (paused) resumes with the old one.
		m.cfg.Log.Warn("persist sandbox", "sandbox", id, "err", err)
	}
	return info, nil
}

func (m *Manager) releaseSlot(ctx context.Context, rec *record) {
	if rec.slot == nil {
		return
	}
	m.dropConnections(rec.slot)
	if err := m.cfg.Slots.Release(ctx, rec.slot); err != nil {
		m.cfg.Log.Warn("release network slot", "sandbox", rec.ID, "err", err)
	}
	rec.slot = nil
}

func (m *Manager) dropConnections(s *netslot.Slot) {
	if m.cfg.DropConnections != nil {
		m.cfg.DropConnections(s.GuestAddr)
	}
}

func (m *Manager) dir(id string) string { return filepath.Join(m.cfg.DataDir, id) }

// makeDir creates a sandbox's dir durably: its name in the data dir survives a crash of the
// machine along with the record written into it.
func (m *Manager) makeDir(id string) error {
	if err := os.MkdirAll(m.dir(id), 0o700); err != nil {
		return err
	}
	return durable.SyncDir(m.cfg.DataDir)
}

// specFor builds the driver's view of a sandbox.
func (m *Manager) specFor(rec *record, tpl runtime.Template) runtime.Spec {
	s := m.spec(rec, rec.ID)
	s.Template = tpl
	s.EnvdSecret = rec.EnvdSecret
	return s
}

func (m *Manager) spec(rec *record, id string) runtime.Spec {
	s := runtime.Spec{ID: id, Dir: filepath.Join(m.dir(id), "runtime")}
	if rec != nil {
		if rec.RuntimeID != "" {
			s.ID = rec.RuntimeID
		}
		s.CPUs, s.MemoryMiB, s.DiskMiB = rec.CPUs, rec.MemoryMiB, rec.DiskMiB
		if rec.slot != nil {
			s.Net = runtime.Net{NetNS: rec.slot.NetnsPath, GuestIP: rec.slot.GuestAddr}
		} else if rec.SlotAddr.IsValid() { // loaded from a record saved mid-pause or mid-resume
			s.Net = runtime.Net{NetNS: rec.SlotNetns, GuestIP: rec.SlotAddr}
		}
	}
	return s
}

const recordFile = "sandbox.json"

// save writes the record durably: a crash at any instant leaves the old or the new one.
func (m *Manager) save(rec *record) error {
	m.mu.Lock()
	if rec.slot != nil {
		rec.SlotAddr, rec.SlotNetns = rec.slot.GuestAddr, rec.slot.NetnsPath
	} else {
		rec.SlotAddr, rec.SlotNetns = netip.Addr{}, ""
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(m.dir(rec.ID), recordFile), data, 0o600)
}

func (m *Manager) load(id string) (*record, error) {
	data, err := os.ReadFile(filepath.Join(m.dir(id), recordFile))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", recordFile, err)
	}
	if rec.ID != id {
		return nil, fmt.Errorf("%s names sandbox %q, not %q (its dir)", recordFile, rec.ID, id)
	}
	if rec.EnvdSecret == "" {
		// Paused by an agent that kept no secret: its envd holds none either, so the /init
		// of the resume sets this one.
		rec.EnvdSecret = newEnvdSecret()
	}
	return &rec, nil
}

// newEnvdSecret returns a fresh secret for envd's internal routes: 256 random bits.
func newEnvdSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand aborts the program instead)
	return hex.EncodeToString(b)
}

// ErrInvalid marks requests that can never succeed as given.
var ErrInvalid = errors.New("invalid request")

// Shutdown destroys every running sandbox and the warm pool and keeps paused ones (their
// snapshots are on disk), for an agent that should leave nothing running when it exits
// (`hearth dev`).
func (m *Manager) Shutdown(ctx context.Context) error {
	m.StopWarmPool(ctx)
	var errs []error
	for _, info := range m.List() {
		if info.State != Running {
			continue
		}
		if err := m.Destroy(ctx, info.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pauseEndReason is what the streams of a pausing sandbox end with (a Connect error the SDKs
// raise, or a WebSocket close reason).
func pauseEndReason(id string) string {
	return fmt.Sprintf("sandbox %s is pausing: its processes keep running; reconnect after it resumes", id)
}
