package sandbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hearthsh/hearth/internal/conntrack"
	"github.com/hearthsh/hearth/internal/runtime"
)

// ErrForkUnsupported means the runtime driver cannot copy running sandboxes.
var ErrForkUnsupported = errors.New("this runtime cannot fork sandboxes")

// ForkChild is one sandbox a fork makes: its ID, envd token, environment and metadata. The
// rest (template, size, outbound policy) is the parent's.
type ForkChild struct {
	ID          string
	AccessToken string
	EnvVars     map[string]string
	Metadata    map[string]string
}

// Fork copies running sandbox id into each of children, on this host: files, memory and
// running processes. The parent refuses other operations while its snapshot is taken and
// runs on as before, whatever happens to the children. The result has one entry per child:
// its info, or the error that kept it from running (it is then gone).
func (m *Manager) Fork(ctx context.Context, id string, children []ForkChild) ([]Info, []error, error) {
	fd, ok := m.cfg.Driver.(runtime.ForkDriver)
	if !ok {
		return nil, nil, ErrForkUnsupported
	}
	for _, c := range children {
		if !idRE.MatchString(c.ID) {
			return nil, nil, fmt.Errorf("%w: sandbox id %q must be lower-case letters, digits and dashes, at most 63", ErrInvalid, c.ID)
		}
	}
	parent, err := m.begin(id, "fork", Running, Forking)
	if err != nil {
		return nil, nil, err
	}
	defer m.settle(parent, Running)
	tpl, err := m.cfg.Templates(parent.Template)
	if err != nil {
		return nil, nil, fmt.Errorf("fork %s: template %q: %w", id, parent.Template, err)
	}

	infos, errs := make([]Info, len(children)), make([]error, len(children))
	var (
		recs  []*record // children still in the running
		idx   []int     // their places in children
		specs []runtime.Spec
	)
	for i, c := range children {
		rec, err := m.newChild(ctx, parent, c, tpl)
		if err != nil {
			errs[i] = err
			continue
		}
		recs, idx, specs = append(recs, rec), append(idx, i), append(specs, m.specFor(rec, tpl))
	}
	failAll := func(err error) ([]Info, []error, error) {
		for _, rec := range recs {
			m.dropChild(ctx, rec, tpl)
		}
		return nil, nil, err
	}
	if len(recs) == 0 {
		return infos, errs, nil
	}
	// The checkpoint closes envd's host socket and every connection on it: streams to envd
	// end cleanly first and requests in flight there finish; other ports stay open.
	if _, err := m.cfg.Conns.Drain(ctx, id, conntrack.Policy{Grace: DrainGrace, EndReason: forkEndReason(id), Port: runtime.EnvdPort}); err != nil {
		m.cfg.Conns.Resume(id)
		return failAll(fmt.Errorf("fork %s: drain connections: %w", id, err))
	}
	defer m.cfg.Conns.Resume(id)
	start := time.Now()
	childErrs, err := fd.Fork(ctx, m.specFor(parent, tpl), specs)
	if err != nil {
		return failAll(err)
	}
	for j, rec := range recs {
		i := idx[j]
		if err := childErrs[j]; err != nil {
			errs[i] = err
			m.dropChild(ctx, rec, tpl)
			continue
		}
		rec.envd = newEnvdClient(specs[j].EnvdAddr(), rec.AccessToken)
		// The copy's envd still holds the parent's token and secret; /init gives it the
		// child's own, its environment and the current time.
		if err := m.initEnvd(ctx, rec, parent.AccessToken, parent.EnvdSecret); err != nil {
			errs[i] = err
			m.dropChild(ctx, rec, tpl)
			continue
		}
		infos[i], _ = m.settle(rec, Running)
	}
	m.cfg.Log.Info("sandbox forked", "sandbox", id, "children", len(recs), "took", time.Since(start))
	return infos, errs, nil
}

// newChild registers a child of parent and gives it a directory and a network slot.
func (m *Manager) newChild(ctx context.Context, parent *record, c ForkChild, tpl runtime.Template) (*record, error) {
	rec := &record{
		Info: Info{
			ID: c.ID, Template: parent.Template, State: Starting, CPUs: parent.CPUs, MemoryMiB: parent.MemoryMiB,
			DiskMiB:   parent.DiskMiB,
			CreatedAt: time.Now().UTC(), Metadata: maps.Clone(c.Metadata),
			Egress: parent.Egress, EgressDomains: slices.Clone(parent.EgressDomains),
		},
		EnvVars:     maps.Clone(c.EnvVars),
		AccessToken: c.AccessToken,
		EnvdSecret:  newEnvdSecret(),
	}
	m.mu.Lock()
	if _, ok := m.sandboxes[c.ID]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: sandbox %s exists", ErrInvalid, c.ID)
	}
	if err := m.admitLocked(); err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("fork into %s: %w", c.ID, err)
	}
	m.sandboxes[c.ID] = rec
	m.mu.Unlock()
	if err := m.makeDir(c.ID); err != nil {
		m.dropChild(ctx, rec, tpl)
		return nil, fmt.Errorf("fork into %s: %w", c.ID, err)
	}
	slot, err := m.acquireSlot(ctx, rec)
	if err != nil {
		m.dropChild(ctx, rec, tpl)
		return nil, fmt.Errorf("fork into %s: acquire network slot: %w", c.ID, err)
	}
	rec.slot = slot
	return rec, nil
}

// dropChild removes a child that will not run.
func (m *Manager) dropChild(ctx context.Context, rec *record, tpl runtime.Template) {
	m.teardown(context.WithoutCancel(ctx), rec, tpl)
	m.mu.Lock()
	delete(m.sandboxes, rec.ID)
	m.mu.Unlock()
}

// forkEndReason is what streams to envd of a forking sandbox end with.
func forkEndReason(id string) string {
	return fmt.Sprintf("sandbox %s is being forked: its processes keep running; reconnect now", id)
}
