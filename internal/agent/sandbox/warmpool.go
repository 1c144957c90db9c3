package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
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

// WarmPool sizes the warm pool: Sizes[template] sandboxes of each template are kept ready,
// each with CPUs and MemoryMiB and the disk size a create of the template without one gets.
// A create claims one only with exactly that shape: the CPU quota, memory limit and disk
// bound come from the OCI spec the sandbox was booted with (the disk bound, the overlay's
// size, cannot change after), so a resized pooled sandbox would not be what a fresh create
// of that shape makes.
type WarmPool struct {
	Sizes     map[string]int
	CPUs      int
	MemoryMiB int
}

// maxWarmPerTemplate bounds one template's pool: each pooled sandbox holds a network slot
// and its idle memory.
const maxWarmPerTemplate = 64

// ParseWarmPool parses a --warm-pool value: comma-separated template=count pairs, e.g.
// "base=2,code-interpreter-v1=1". An empty value is an empty pool.
func ParseWarmPool(v string) (map[string]int, error) {
	sizes := map[string]int{}
	if strings.TrimSpace(v) == "" {
		return sizes, nil
	}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		name, count, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("warm pool entry %q: want template=count, e.g. base=2", part)
		}
		if !idRE.MatchString(name) {
			return nil, fmt.Errorf("warm pool entry %q: template name %q must be lower-case letters, digits and dashes", part, name)
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 || n > maxWarmPerTemplate {
			return nil, fmt.Errorf("warm pool entry %q: count %q must be a whole number from 1 to %d", part, count, maxWarmPerTemplate)
		}
		if _, dup := sizes[name]; dup {
			return nil, fmt.Errorf("warm pool entry %q: template %s is named twice", part, name)
		}
		sizes[name] = n
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
	disk     int
}

// warmState is the pool's part of the Manager; ready and filling are guarded by Manager.mu.
type warmState struct {
	ready   map[string][]*warm
	filling int
	closed  bool
	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
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
	m.warm = warmState{ready: map[string][]*warm{}, wake: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
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

// refill boots pooled sandboxes one at a time, so that filling the pool never takes more
// than one core from the creates it is there to speed up.
func (m *Manager) refill(ctx context.Context) {
	defer close(m.warm.done)
	failures := map[string]int{}
	retryAt := map[string]time.Time{}
	for {
		m.dropStale(ctx)
		name, wait := m.nextToFill(retryAt)
		if name == "" {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-m.warm.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		err := m.fillOne(ctx, name)
		m.mu.Lock()
		m.warm.filling--
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures[name]++
			d := min(warmBackoffMin<<min(failures[name]-1, 10), warmBackoffMax)
			retryAt[name] = time.Now().Add(d)
			m.cfg.Log.Warn("warm pool: boot failed", "template", name, "retry_in", d, "err", err)
			continue
		}
		delete(failures, name)
		delete(retryAt, name)
	}
}

// nextToFill picks the template whose pool is furthest below its size (and counts the boot
// as filling), or returns "" and how long to wait: until the next retry of a failed
// template, or warmRecheck. Under MaxActive, pooled sandboxes and sandboxes count together.
func (m *Manager) nextToFill(retryAt map[string]time.Time) (string, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wait := warmRecheck
	if m.cfg.MaxActive > 0 && m.activeLocked()+m.pooledLocked()+m.warm.filling >= m.cfg.MaxActive {
		return "", wait
	}
	names := make([]string, 0, len(m.cfg.WarmPool.Sizes))
	for name := range m.cfg.WarmPool.Sizes {
		names = append(names, name)
	}
	sort.Strings(names)
	best, deficit := "", 0
	now := time.Now()
	for _, name := range names {
		d := m.cfg.WarmPool.Sizes[name] - len(m.warm.ready[name])
		if d <= 0 {
			continue
		}
		if at, ok := retryAt[name]; ok && now.Before(at) {
			wait = min(wait, at.Sub(now))
			continue
		}
		if d > deficit {
			best, deficit = name, d
		}
	}
	if best != "" {
		m.warm.filling++
	}
	return best, wait
}

// dropStale destroys pooled sandboxes of a template rebuilt (or removed) since they booted.
func (m *Manager) dropStale(ctx context.Context) {
	m.mu.Lock()
	names := make([]string, 0, len(m.warm.ready))
	for name := range m.warm.ready {
		names = append(names, name)
	}
	m.mu.Unlock()
	for _, name := range names {
		tpl, err := m.cfg.Templates(name)
		m.mu.Lock()
		var stale []*warm
		m.warm.ready[name] = slices.DeleteFunc(m.warm.ready[name], func(w *warm) bool {
			if err != nil || w.tpl.Version != tpl.Version || w.tpl.RootFS != tpl.RootFS {
				stale = append(stale, w)
				return true
			}
			return false
		})
		m.mu.Unlock()
		for _, w := range stale {
			m.cfg.Log.Info("warm pool: dropping sandbox of an older template build", "template", name, "runtime_id", w.id)
			m.destroyWarm(ctx, w)
		}
	}
}

// fillOne boots one pooled sandbox of template name and adds it to the pool.
func (m *Manager) fillOne(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, warmBootTimeout)
	defer cancel()
	tpl, err := m.cfg.Templates(name)
	if err != nil {
		return fmt.Errorf("template %q: %w", name, err)
	}
	disk := tpl.DiskMiB
	if disk <= 0 {
		disk = m.cfg.DefaultDiskMiB
	}
	w := &warm{id: newWarmID(), template: name, tpl: tpl, cpus: m.cfg.WarmPool.CPUs, mem: m.cfg.WarmPool.MemoryMiB, disk: disk}
	start := time.Now()
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
	m.warm.ready[name] = append(m.warm.ready[name], w)
	n := len(m.warm.ready[name])
	m.mu.Unlock()
	m.cfg.Log.Info("warm pool: sandbox ready", "template", name, "runtime_id", w.id, "ready", n, "took", time.Since(start))
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
