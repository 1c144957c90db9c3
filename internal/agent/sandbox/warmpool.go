package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/durable"
	"github.com/hearthsh/hearth/internal/netslot"
	"github.com/hearthsh/hearth/internal/runtime"
)

// The warm pool keeps, per template, a few sandboxes booted ahead of need: envd answers, no
// /init has been sent, the slot allows what the host allows. A create of that template and
// shape claims one instead of booting: the pooled sandbox's dir is renamed to the new ID's,
// the request's egress policy replaces the slot's, and the /init a fresh create would send
// (environment, access token, agent secret, user, clock) is sent. The runtime keeps the
// container ID it was booted under (RuntimeID) until the sandbox is next paused.

// warmDir holds the pooled sandboxes' dirs: <DataDir>/.warm/<runtime id>/. Its name is no
// sandbox ID, so neither Recover's scan nor a create's ID can meet a pooled sandbox's dir.
const warmDir = ".warm"

// Timing of the refill loop.
const (
	// warmRecheck is how often the loop looks for pooled sandboxes of a rebuilt template
	// (dropped) and for room freed under MaxActive, without a claim to wake it.
	warmRecheck = 30 * time.Second
	// warmBackoffMin and warmBackoffMax bound the wait after a failed boot, doubled per
	// failure in a row, so a template that cannot boot does not keep the host busy.
	warmBackoffMin = 2 * time.Second
	warmBackoffMax = 2 * time.Minute
	// warmBootTimeout bounds one pooled boot (a template snapshot may be taken first).
	warmBootTimeout = 5 * time.Minute
)

// WarmPool sizes the warm pool: Sizes[ref] sandboxes of each entry are kept ready.
//
// An entry that is a template of this host (a name Config.Templates opens, without a tag) is
// pooled as itself, each sandbox with CPUs and MemoryMiB and the disk size a create of the
// template without one gets. Any other entry, with ControlPlane set, is a ref of the control
// plane's (`name[:tag]` or `templateID[:tag]`, the bare name being tag "default"): the agent
// asks about it in its heartbeats (WarmRefs) and pools what the answer names
// (SetWarmTargets): the version the ref points at, fetched first if this host lacks it, with
// the shape a create of the ref asks for; when a later answer names another build, the
// pool moves to it. A ref without an answer, or whose answer is an error, pools nothing.
//
// A create claims a pooled sandbox only with exactly its shape and template build: the CPU
// quota, memory limit and disk bound come from the OCI spec the sandbox was booted with (the
// disk bound, the overlay's size, cannot change after), so a resized pooled sandbox would not
// be what a fresh create of that shape makes.
type WarmPool struct {
	Sizes     map[string]int
	CPUs      int
	MemoryMiB int
	// ControlPlane says a control plane answers the agent's heartbeats and resolves the
	// entries that are no template of this host; without one every entry is pooled as a
	// template of this host (and one that is not fails to boot).
	ControlPlane bool
}

// WarmTarget is the control plane's answer for one warm pool ref (hostreg.WarmTarget): the
// agent's name of the version to pool, the digest of its manifest in the artifacts store,
// and the shape a create of the ref asks for (DiskMiB 0: the template's, as for a create); or
// Err, why the ref has nothing to boot.
type WarmTarget struct {
	Template, Artifact, BuildID string
	CPUs, MemoryMiB, DiskMiB    int
	Err                         string
}

// maxWarmPerTemplate bounds one template's pool: each pooled sandbox holds a network slot
// and its idle memory.
const maxWarmPerTemplate = 64

// warmTagRE is a tag's form, as the control plane accepts it (internal/cp: checkTag).
var (
	warmTagRE  = regexp.MustCompile(`^[a-z0-9-_.]+$`)
	warmUUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// ParseWarmPool parses a --warm-pool value: comma-separated ref=count pairs, e.g.
// "base=2,my-tpl=1,code-interpreter-v1:prod=1". A ref is a template name or ID with at most
// one :tag. An empty value is an empty pool.
func ParseWarmPool(v string) (map[string]int, error) {
	sizes := map[string]int{}
	if strings.TrimSpace(v) == "" {
		return sizes, nil
	}
	seen := map[string]string{} // the ref each entry means (bare name = :default) → as given
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		ref, count, ok := strings.Cut(part, "=")
		if !ok || ref == "" {
			return nil, fmt.Errorf("warm pool entry %q: want template=count or template:tag=count, e.g. base=2", part)
		}
		name, tag, tagged := strings.Cut(ref, ":")
		if !idRE.MatchString(name) {
			return nil, fmt.Errorf("warm pool entry %q: template name %q must be lower-case letters, digits and dashes, at most 63", part, name)
		}
		if tagged {
			switch {
			case tag == "":
				return nil, fmt.Errorf("warm pool entry %q: empty tag after %q: give a tag, or the name alone for tag default", part, name+":")
			case strings.Contains(tag, ":"):
				return nil, fmt.Errorf("warm pool entry %q: one :tag at most", part)
			case !warmTagRE.MatchString(tag) || warmUUIDRE.MatchString(tag):
				return nil, fmt.Errorf("warm pool entry %q: tag %q must be lower-case letters, digits, '-', '_' and '.', and not a UUID", part, tag)
			}
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 || n > maxWarmPerTemplate {
			return nil, fmt.Errorf("warm pool entry %q: count %q must be a whole number from 1 to %d", part, count, maxWarmPerTemplate)
		}
		same := ref
		if tag == "default" {
			same = name
		}
		if prev, dup := seen[same]; dup {
			if prev == ref {
				return nil, fmt.Errorf("warm pool entry %q: template %s is named twice", part, ref)
			}
			return nil, fmt.Errorf("warm pool entry %q: %s and %s are the same (the bare name is tag default)", part, prev, ref)
		}
		seen[same] = ref
		sizes[ref] = n
	}
	return sizes, nil
}

// warm is one pooled sandbox.
type warm struct {
	id       string // runtime ID and dir name under warmDir
	template string
	tpl      runtime.Template
	slot     *netslot.Slot
	cpus     int
	mem      int
	disk     int // as booted
	diskReq  int // as its target asked: 0 for the template's
}

func (w *warm) key() warmKey { return warmKey{w.template, w.cpus, w.mem, w.diskReq} }

// warmKey is what a pooled sandbox is kept for: a template of the agent (by its name) and a
// shape; disk 0 takes the template's disk size, as a create's does.
type warmKey struct {
	template  string
	cpus, mem int
	disk      int
}

func (k warmKey) String() string {
	return fmt.Sprintf("%s (%d CPUs, %d MiB, disk %d MiB)", k.template, k.cpus, k.mem, k.disk)
}

// warmTarget is how many sandboxes the pool keeps of one key, for which entries.
type warmTarget struct {
	warmKey
	artifact string // to fetch the template with when this host lacks it
	count    int
	refs     []string
}

// warmState is the pool's part of the Manager; its maps and filling are guarded by
// Manager.mu.
type warmState struct {
	ready map[string][]*warm
	// answers are the control plane's latest answers for the refs it resolves, by ref.
	answers map[string]WarmTarget
	// deletedAt is when DropWarmTemplate last ran for a template name: an answer to a
	// heartbeat built before then may still name the deleted version, and is not followed.
	deletedAt map[string]time.Time
	filling   int
	closed    bool
	wake      chan struct{}
	stop      context.CancelFunc
	done      chan struct{}
	// dropping counts the pooled sandboxes given up for a create's room, destroyed in the
	// background so that the create does not wait for it; StopWarmPool waits for them.
	dropping sync.WaitGroup
}

func (m *Manager) warmRoot() string          { return filepath.Join(m.cfg.DataDir, warmDir) }
func (m *Manager) warmPath(id string) string { return filepath.Join(m.warmRoot(), id) }

func (w *warm) spec(m *Manager) runtime.Spec {
	return runtime.Spec{
		ID: w.id, Dir: filepath.Join(m.warmPath(w.id), "runtime"), Template: w.tpl,
		Net:  runtime.Net{NetNS: w.slot.NetnsPath, GuestIP: w.slot.GuestAddr},
		CPUs: w.cpus, MemoryMiB: w.mem, DiskMiB: w.disk,
		// envd holds no secret until the claim's /init; a fresh create's spec has one too.
		EnvdSecret: newEnvdSecret(),
	}
}

// WarmPoolSupported reports whether the driver can hand a pooled sandbox to a create.
func (m *Manager) WarmPoolSupported() bool {
	d, ok := m.cfg.Driver.(runtime.AdoptableDriver)
	return ok && d.Adoptable()
}

// StartWarmPool starts filling the pool of Config.WarmPool in the background; call it after
// Recover. It returns an error, and starts nothing, when the driver cannot adopt sandboxes.
// StopWarmPool (or Shutdown) destroys what it holds.
func (m *Manager) StartWarmPool() error {
	if len(m.cfg.WarmPool.Sizes) == 0 {
		return nil
	}
	if !m.WarmPoolSupported() {
		return errors.New("this runtime cannot keep a warm pool (gVisor can)")
	}
	if m.cfg.WarmPool.CPUs < 1 || m.cfg.WarmPool.MemoryMiB < 64 {
		return fmt.Errorf("%w: warm pool sandboxes need at least 1 CPU and 64 MiB (got %d CPUs, %d MiB)", ErrInvalid, m.cfg.WarmPool.CPUs, m.cfg.WarmPool.MemoryMiB)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.mu.Lock()
	m.warm = warmState{ready: map[string][]*warm{}, answers: map[string]WarmTarget{}, deletedAt: map[string]time.Time{},
		wake: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	m.mu.Unlock()
	go m.refill(ctx)
	return nil
}

// StopWarmPool stops the refill and destroys every pooled sandbox (waiting for a boot in
// progress to end). Idempotent; claimed sandboxes are not the pool's any more.
func (m *Manager) StopWarmPool(ctx context.Context) {
	m.mu.Lock()
	if m.warm.stop == nil || m.warm.closed {
		m.mu.Unlock()
		return
	}
	m.warm.closed = true
	m.warm.stop()
	done := m.warm.done
	m.mu.Unlock()
	<-done
	m.warm.dropping.Wait()
	m.mu.Lock()
	var all []*warm
	for _, ws := range m.warm.ready {
		all = append(all, ws...)
	}
	m.warm.ready = map[string][]*warm{}
	m.mu.Unlock()
	for _, w := range all {
		m.destroyWarm(ctx, w)
	}
	os.Remove(m.warmRoot()) // empty now; a leftover in it is removed at the next start
}

// WarmReady returns how many pooled sandboxes of each template are ready to be claimed.
func (m *Manager) WarmReady() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for name, ws := range m.warm.ready {
		if len(ws) > 0 {
			out[name] = len(ws)
		}
	}
	return out
}

// WarmRefs returns the warm pool entries the control plane is to resolve, for a heartbeat:
// those with a tag and those that are no template of this host. None without
// WarmPool.ControlPlane.
func (m *Manager) WarmRefs() []string {
	if !m.cfg.WarmPool.ControlPlane {
		return nil
	}
	var out []string
	for _, ref := range slices.Sorted(maps.Keys(m.cfg.WarmPool.Sizes)) {
		if m.remoteRef(ref) {
			out = append(out, ref)
		}
	}
	return out
}

// remoteRef says whether pool entry ref is the control plane's to resolve rather than a
// template of this host. A template fetched for a ref's answer becomes one of this host when
// the answer names it by the ref itself (a template built on another agent): it is pooled as
// this host's, as before the control plane resolved refs.
func (m *Manager) remoteRef(ref string) bool {
	if !m.cfg.WarmPool.ControlPlane {
		return false
	}
	if strings.Contains(ref, ":") {
		return true
	}
	m.mu.Lock()
	a, answered := m.warm.answers[ref]
	m.mu.Unlock()
	if answered && a.Template != "" && a.Template != ref {
		return true
	}
	_, err := m.cfg.Templates(ref)
	return err != nil
}

// SetWarmTargets takes the control plane's answers to a heartbeat built at builtAt that
// asked about refs: a ref it did not answer, or answered with an error, pools nothing; a
// ref whose answer names another version or shape than before moves the pool to it (the
// refill drops the older one's sandboxes). Each change is logged once.
func (m *Manager) SetWarmTargets(builtAt time.Time, refs []string, answers map[string]WarmTarget) {
	type change struct {
		ref string
		t   WarmTarget
	}
	var changes []change
	m.mu.Lock()
	if m.warm.answers == nil || m.warm.closed {
		m.mu.Unlock()
		return
	}
	for _, ref := range refs {
		a, ok := answers[ref]
		switch {
		case !ok:
			a = WarmTarget{Err: "the control plane did not resolve it (one older than this agent resolves no warm pool refs)"}
		case a.Template == "" && a.Err == "":
			a.Err = "the control plane resolved it to no template"
		case a.Template != "" && builtAt.Before(m.warm.deletedAt[a.Template]):
			continue // answered before the version was deleted: wait for a newer answer
		}
		if old, had := m.warm.answers[ref]; had && old == a {
			continue
		}
		m.warm.answers[ref] = a
		changes = append(changes, change{ref, a})
	}
	for name, at := range m.warm.deletedAt {
		if time.Since(at) > 10*time.Minute { // no heartbeat's answer is that late
			delete(m.warm.deletedAt, name)
		}
	}
	m.mu.Unlock()
	for _, c := range changes {
		if c.t.Err != "" {
			m.cfg.Log.Warn("warm pool: ref resolves to nothing to boot; pooling none for it", "ref", c.ref, "err", c.t.Err)
			continue
		}
		m.cfg.Log.Info("warm pool: ref resolved", "ref", c.ref, "template", c.t.Template, "build", c.t.BuildID,
			"cpus", c.t.CPUs, "memory_mib", c.t.MemoryMiB, "disk_mib", c.t.DiskMiB)
	}
	if len(changes) > 0 {
		m.wakeRefill()
	}
}

// DropWarmTemplate destroys the pooled sandboxes of template name, which is being deleted
// (DeleteTemplate: the control plane collected the version), before its files go, and keeps
// the pool from booting it again: refs whose answer named it pool nothing until an answer to
// a later heartbeat.
func (m *Manager) DropWarmTemplate(ctx context.Context, name string) {
	m.mu.Lock()
	if m.warm.ready == nil {
		m.mu.Unlock()
		return
	}
	ws := m.warm.ready[name]
	delete(m.warm.ready, name)
	m.warm.deletedAt[name] = time.Now()
	for ref, a := range m.warm.answers {
		if a.Template == name {
			m.warm.answers[ref] = WarmTarget{Err: "its version " + name + " was deleted; waiting for the control plane's next answer"}
		}
	}
	m.mu.Unlock()
	for _, w := range ws {
		m.cfg.Log.Info("warm pool: dropping sandbox of a deleted template", "template", name, "runtime_id", w.id)
		m.destroyWarm(ctx, w)
	}
	m.wakeRefill()
}

// warmTargets is what the pool should hold now: per template and shape, how many. Entries
// that resolve to the same key add up.
func (m *Manager) warmTargets() []*warmTarget {
	byKey := map[warmKey]*warmTarget{}
	for _, ref := range slices.Sorted(maps.Keys(m.cfg.WarmPool.Sizes)) {
		k, artifact := warmKey{template: ref, cpus: m.cfg.WarmPool.CPUs, mem: m.cfg.WarmPool.MemoryMiB}, ""
		if m.remoteRef(ref) {
			m.mu.Lock()
			a, ok := m.warm.answers[ref]
			m.mu.Unlock()
			if !ok || a.Err != "" || a.Template == "" {
				continue
			}
			k, artifact = warmKey{template: a.Template, cpus: a.CPUs, mem: a.MemoryMiB, disk: max(a.DiskMiB, 0)}, a.Artifact
		}
		t := byKey[k]
		if t == nil {
			t = &warmTarget{warmKey: k, artifact: artifact}
			byKey[k] = t
		}
		t.count += m.cfg.WarmPool.Sizes[ref]
		t.refs = append(t.refs, ref)
	}
	out := slices.Collect(maps.Values(byKey))
	slices.SortFunc(out, func(a, b *warmTarget) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// refill boots pooled sandboxes one at a time, so that filling the pool never takes more
// than one core from the creates it is there to speed up.
func (m *Manager) refill(ctx context.Context) {
	defer close(m.warm.done)
	failures := map[warmKey]int{}
	retryAt := map[warmKey]time.Time{}
	for {
		targets := m.warmTargets()
		m.dropStale(ctx, targets)
		t, wait := m.nextToFill(targets, retryAt)
		if t == nil {
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-m.warm.wake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		err := m.fillOne(ctx, t)
		m.mu.Lock()
		m.warm.filling--
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures[t.warmKey]++
			d := min(warmBackoffMin<<min(failures[t.warmKey]-1, 10), warmBackoffMax)
			retryAt[t.warmKey] = time.Now().Add(d)
			m.cfg.Log.Warn("warm pool: boot failed", "template", t.template, "refs", t.refs, "retry_in", d, "err", err)
			continue
		}
		delete(failures, t.warmKey)
		delete(retryAt, t.warmKey)
	}
}

// readyLocked counts the pooled sandboxes of key k.
func (m *Manager) readyLocked(k warmKey) int {
	n := 0
	for _, w := range m.warm.ready[k.template] {
		if w.key() == k {
			n++
		}
	}
	return n
}

// nextToFill picks the target furthest below its count (and counts the boot as filling), or
// returns nil and how long to wait: until the next retry of a failed target, or warmRecheck.
// Under MaxActive, pooled sandboxes and sandboxes count together.
func (m *Manager) nextToFill(targets []*warmTarget, retryAt map[warmKey]time.Time) (*warmTarget, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wait := warmRecheck
	if m.cfg.MaxActive > 0 && m.activeLocked()+m.pooledLocked()+m.warm.filling >= m.cfg.MaxActive {
		return nil, wait
	}
	var best *warmTarget
	deficit := 0
	now := time.Now()
	for _, t := range targets {
		d := t.count - m.readyLocked(t.warmKey)
		if d <= 0 {
			continue
		}
		if at, ok := retryAt[t.warmKey]; ok && now.Before(at) {
			wait = min(wait, at.Sub(now))
			continue
		}
		if d > deficit {
			best, deficit = t, d
		}
	}
	if best != nil {
		m.warm.filling++
	}
	return best, wait
}

// dropStale destroys pooled sandboxes no target wants any more: of a template rebuilt (or
// removed) since they booted, of a version or shape the pool moved off (a ref's tag moved),
// or past their target's count.
func (m *Manager) dropStale(ctx context.Context, targets []*warmTarget) {
	want := map[warmKey]int{}
	for _, t := range targets {
		want[t.warmKey] = t.count
	}
	m.mu.Lock()
	names := slices.Collect(maps.Keys(m.warm.ready))
	m.mu.Unlock()
	for _, name := range names {
		tpl, err := m.cfg.Templates(name)
		m.mu.Lock()
		type drop struct {
			w   *warm
			why string
		}
		var stale []drop
		kept := map[warmKey]int{}
		m.warm.ready[name] = slices.DeleteFunc(m.warm.ready[name], func(w *warm) bool {
			k := w.key()
			switch {
			case err != nil || w.tpl.Version != tpl.Version || w.tpl.RootFS != tpl.RootFS:
				stale = append(stale, drop{w, "of an older template build"})
			case kept[k] >= want[k]:
				stale = append(stale, drop{w, "the pool no longer wants (its ref moved to another build or shape)"})
			default:
				kept[k]++
				return false
			}
			return true
		})
		if len(m.warm.ready[name]) == 0 {
			delete(m.warm.ready, name)
		}
		m.mu.Unlock()
		for _, d := range stale {
			m.cfg.Log.Info("warm pool: dropping sandbox "+d.why, "template", name, "runtime_id", d.w.id)
			m.destroyWarm(ctx, d.w)
		}
	}
}

// fillOne boots one pooled sandbox of target t and adds it to the pool, fetching the
// template first, as a create does, when this host lacks it.
func (m *Manager) fillOne(ctx context.Context, t *warmTarget) error {
	ctx, cancel := context.WithTimeout(ctx, warmBootTimeout)
	defer cancel()
	start := time.Now()
	tpl, err := m.openTemplate(ctx, t.template, t.artifact)
	if err != nil {
		return err
	}
	disk := t.disk
	if disk <= 0 {
		disk = tpl.DiskMiB
	}
	if disk <= 0 {
		disk = m.cfg.DefaultDiskMiB
	}
	w := &warm{id: newWarmID(), template: t.template, tpl: tpl, cpus: t.cpus, mem: t.mem, disk: disk, diskReq: t.disk}
	if err := os.MkdirAll(m.warmPath(w.id), 0o700); err != nil {
		return err
	}
	opts := append(slices.Clone(m.cfg.SlotOpts), netslot.WithEgress(slotEgress(netslot.Egress{}, nil)))
	if w.slot, err = m.cfg.Slots.Acquire(ctx, w.id, opts...); err != nil {
		os.RemoveAll(m.warmPath(w.id))
		return fmt.Errorf("acquire network slot: %w", err)
	}
	if err := m.cfg.Driver.Create(ctx, w.spec(m)); err != nil {
		m.destroyWarm(context.WithoutCancel(ctx), w)
		return err
	}
	m.mu.Lock()
	if m.warm.closed {
		m.mu.Unlock()
		m.destroyWarm(context.WithoutCancel(ctx), w)
		return ctx.Err()
	}
	if at, ok := m.warm.deletedAt[t.template]; ok && at.After(start) {
		// The template was deleted while this booted from it.
		m.mu.Unlock()
		m.destroyWarm(context.WithoutCancel(ctx), w)
		return fmt.Errorf("template %s was deleted while a pooled sandbox booted from it", t.template)
	}
	m.warm.ready[t.template] = append(m.warm.ready[t.template], w)
	n := m.readyLocked(t.warmKey)
	m.mu.Unlock()
	m.cfg.Log.Info("warm pool: sandbox ready", "template", t.template, "refs", t.refs, "runtime_id", w.id, "ready", n, "of", t.count,
		"cpus", w.cpus, "memory_mib", w.mem, "disk_mib", w.disk, "took", time.Since(start))
	return nil
}

// destroyWarm removes a pooled sandbox that was not claimed: runtime, slot and dir.
func (m *Manager) destroyWarm(ctx context.Context, w *warm) {
	if err := m.cfg.Driver.Destroy(ctx, w.spec(m)); err != nil {
		m.cfg.Log.Warn("warm pool: destroy sandbox", "runtime_id", w.id, "err", err)
	}
	if w.slot != nil {
		m.dropConnections(w.slot)
		if err := m.cfg.Slots.Release(ctx, w.slot); err != nil {
			m.cfg.Log.Warn("warm pool: release network slot", "runtime_id", w.id, "err", err)
		}
	}
	if err := os.RemoveAll(m.warmPath(w.id)); err != nil {
		m.cfg.Log.Warn("warm pool: remove dir", "runtime_id", w.id, "err", err)
	}
}

// takeWarmLocked removes from the pool, and returns, a sandbox that can become req: same
// template build, CPUs, memory and disk, and no snapshot to start from. Call with m.mu held,
// in the critical section that admits req. When none fits and the host is at MaxActive with
// pooled sandboxes counted, one of them is given up for req (victim) so the cap holds.
func (m *Manager) takeWarmLocked(req CreateRequest, tpl runtime.Template) (claimed, victim *warm) {
	if m.warm.ready == nil || m.warm.closed {
		return nil, nil
	}
	defer m.wakeRefill()
	if req.SnapshotID == "" {
		ws := m.warm.ready[req.Template]
		for i, w := range ws {
			if w.cpus == req.CPUs && w.mem == req.MemoryMiB && w.disk == req.DiskMiB &&
				w.tpl.Version == tpl.Version && w.tpl.RootFS == tpl.RootFS {
				m.warm.ready[req.Template] = slices.Delete(ws, i, i+1)
				return w, nil
			}
		}
	}
	if m.cfg.MaxActive > 0 && m.activeLocked()+m.pooledLocked() > m.cfg.MaxActive {
		for name, ws := range m.warm.ready {
			if len(ws) > 0 {
				victim = ws[len(ws)-1]
				m.warm.ready[name] = ws[:len(ws)-1]
				m.warm.dropping.Add(1)
				return nil, victim
			}
		}
	}
	return nil, nil
}

// dropForRoom destroys a pooled sandbox takeWarmLocked gave up for a create's room.
func (m *Manager) dropForRoom(ctx context.Context, w *warm) {
	defer m.warm.dropping.Done()
	m.destroyWarm(ctx, w)
}

func (m *Manager) wakeRefill() {
	select {
	case m.warm.wake <- struct{}{}:
	default:
	}
}

// adopt makes pooled sandbox w the sandbox of rec, as a fresh create would have left it. On
// error the caller tears rec down (w's runtime and slot are rec's by then, or w is gone).
func (m *Manager) adopt(ctx context.Context, rec *record, w *warm, tpl runtime.Template) error {
	// The whole dir moves: the runtime holds what it opened there, and the tmpfs mounts of
	// its socket and logs move with it.
	if err := os.Rename(m.warmPath(w.id), m.dir(rec.ID)); err != nil {
		m.destroyWarm(context.WithoutCancel(ctx), w)
		return fmt.Errorf("move pooled sandbox dir: %w", err)
	}
	// The slot is this create's alone now; its messages name the sandbox from here on.
	w.slot.SandboxID = rec.ID
	m.mu.Lock()
	rec.RuntimeID, rec.slot = w.id, w.slot
	m.mu.Unlock()
	if err := durable.SyncDir(m.cfg.DataDir); err != nil {
		return fmt.Errorf("create sandbox dir: %w", err)
	}
	// The pooled slot allows what the host allows; the request's policy is in force before
	// /init, so no process of the caller's ever runs under the pool's.
	if len(rec.Egress.Allow) > 0 || len(rec.Egress.Deny) > 0 || len(rec.EgressDomains) > 0 {
		if err := m.cfg.Slots.SetEgress(ctx, rec.slot, slotEgress(rec.Egress, rec.EgressDomains)); err != nil {
			return fmt.Errorf("set egress: %w", err)
		}
		m.dropConnections(rec.slot)
	}
	spec := m.specFor(rec, tpl)
	rec.envd = newEnvdClient(spec.EnvdAddr(), rec.AccessToken)
	// As after a fresh boot, envd holds no token or secret yet: this /init sets them.
	return m.initEnvd(ctx, rec, "", rec.EnvdSecret)
}

// removeWarmLeftovers destroys pooled sandboxes a previous run of the agent left behind
// (none is ever claimed across a restart). Call after the driver's Reclaim.
func (m *Manager) removeWarmLeftovers(ctx context.Context) {
	ents, err := os.ReadDir(m.warmRoot())
	if err != nil {
		return
	}
	for _, e := range ents {
		spec := runtime.Spec{ID: e.Name(), Dir: filepath.Join(m.warmPath(e.Name()), "runtime")}
		if err := m.cfg.Driver.Destroy(ctx, spec); err != nil {
			m.cfg.Log.Warn("destroy leftover warm pool sandbox", "runtime_id", e.Name(), "err", err)
		}
	}
	if err := os.RemoveAll(m.warmRoot()); err != nil {
		m.cfg.Log.Warn("remove leftover warm pool dir", "err", err)
	}
}

// activeLocked counts the sandboxes that are not paused; pooledLocked the pooled ones.
func (m *Manager) activeLocked() int {
	n := 0
	for _, r := range m.sandboxes {
		if r.State != Paused {
			n++
		}
	}
	return n
}

func (m *Manager) pooledLocked() int {
	n := 0
	for _, ws := range m.warm.ready {
		n += len(ws)
	}
	return n
}

// newWarmID names a pooled sandbox in the runtime: random, so it never meets a sandbox ID.
func newWarmID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "warm-" + hex.EncodeToString(b)
}
