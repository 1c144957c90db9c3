package cp

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
)

// errNotDue says a sandbox listed as expired was dealt with meanwhile: its deadline moved, or
// it was paused or killed, by a request or by another control plane replica.
var errNotDue = errors.New("no longer due")

// claimExpired moves a sandbox that is still in state from past its deadline to state to, in
// one store update. Replicas that listed the same sandbox race here and exactly one wins, so
// a timeout acts once: it never pauses a sandbox twice, nor kills one another replica paused.
func (s *Server) claimExpired(ctx context.Context, id, from, to string) (store.Sandbox, error) {
	now := time.Now().UTC()
	return s.store.UpdateSandbox(ctx, id, func(x *store.Sandbox) error {
		if x.State != from || !x.EndAt.Before(now) {
			return errNotDue
		}
		x.State = to
		return nil
	})
}

// expire kills or pauses running sandboxes whose deadline passed.
func (s *Server) expire(ctx context.Context) {
	due, err := s.store.ExpiredSandboxes(ctx, time.Now().UTC())
	if err != nil {
		s.log.Warn("list expired sandboxes", "err", err)
		return
	}
	for _, sb := range due {
		s.expireOne(ctx, sb)
	}
}

func (s *Server) expireOne(ctx context.Context, listed store.Sandbox) {
	id := listed.ID
	if listed.State == store.StateLost {
		s.expireLost(ctx, listed)
		return
	}
	if listed.AutoPause {
		sb, err := s.claimExpired(ctx, id, store.StateRunning, store.StatePausing)
		if err != nil {
			if !errors.Is(err, errNotDue) && !errors.Is(err, store.ErrNotFound) {
				s.log.Warn("auto-pause on timeout", "sandbox", id, "err", err)
			}
			return
		}
		err = s.pauseClaimed(ctx, sb, sb.AutoPauseFilesystemOnly)
		if err == nil {
			s.counts.timeoutPaused.Add(1)
			s.log.Info("sandbox paused on timeout", "sandbox", id)
			return
		}
		// pauseClaimed left it running; kill it if it is still due and nobody else did.
		s.log.Warn("auto-pause on timeout failed; killing instead", "sandbox", id, "err", err)
	}
	sb, err := s.claimExpired(ctx, id, store.StateRunning, store.StateStopping)
	if err != nil {
		if !errors.Is(err, errNotDue) && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("kill on timeout", "sandbox", id, "err", err)
		}
		return
	}
	reason := "killed: timeout"
	if listed.AutoPause {
		reason = "killed: timeout (auto-pause failed)"
	}
	if err := s.killClaimed(ctx, sb, true, reason); err != nil {
		s.log.Warn("kill on timeout", "sandbox", id, "err", err)
		return
	}
	s.counts.timeoutKilled.Add(1)
	s.log.Info("sandbox killed on timeout", "sandbox", id)
}

// expireLost deals with the timeout of a sandbox whose host is away. One that would be
// killed is forgotten now (its agent destroys it on return, as it does every sandbox the
// store does not know); one that would be paused cannot be, so it waits for its host:
// back and running, its timeout pauses it then.
func (s *Server) expireLost(ctx context.Context, listed store.Sandbox) {
	if listed.AutoPause {
		return
	}
	sb, err := s.claimExpired(ctx, listed.ID, store.StateLost, store.StateStopping)
	if err != nil {
		if !errors.Is(err, errNotDue) && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("kill lost sandbox on timeout", "sandbox", listed.ID, "err", err)
		}
		return
	}
	if err := s.killClaimed(ctx, sb, false, "killed: timeout (its host was away)"); err != nil {
		s.log.Warn("kill lost sandbox on timeout", "sandbox", listed.ID, "err", err)
		return
	}
	s.counts.timeoutKilled.Add(1)
	s.log.Info("lost sandbox killed on timeout", "sandbox", listed.ID)
}

// Reconcile compares the store with every ready agent's own list, for a control plane that
// restarts while agents keep running.
func (s *Server) Reconcile(ctx context.Context) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		s.log.Warn("reconcile: list hosts", "err", err)
		return
	}
	for _, h := range hosts {
		if h.State == store.HostReady {
			s.reconcileHost(ctx, h)
		}
	}
}

// reconcileHost makes the store agree with what one agent runs: records of sandboxes the
// agent no longer has are dropped, states are corrected (a lost sandbox the agent still has
// is running or paused again), and sandboxes the store does not know (killed while their
// host was away) are destroyed on the agent.
//
// The store is read before the agent: a sandbox the store lists as running or paused here
// was already on the agent then (creates and moves record that after the agent has it), so
// one missing from the agent's later list is really gone. (Read the other way round, a
// create another replica finished between the two reads looked gone, and its record was
// dropped.) Each correction is conditional on the record being as read: whatever changed
// it meanwhile (a kill, a pause, a move) wins.
func (s *Server) reconcileHost(ctx context.Context, h store.Host) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var records []store.Sandbox
	cursor := ""
	for {
		page, next, err := s.store.ListSandboxes(ctx, store.SandboxFilter{HostID: h.ID, Cursor: cursor})
		if err != nil {
			s.log.Warn("reconcile: list sandboxes", "host", h.ID, "err", err)
			return
		}
		records = append(records, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	res, err := s.agents.client(h).List(ctx, connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		s.log.Warn("reconcile: list sandboxes on agent", "host", h.ID, "err", err)
		return
	}
	onAgent := map[string]*pb.Sandbox{}
	for _, sb := range res.Msg.GetSandboxes() {
		onAgent[sb.GetSandboxId()] = sb
	}
	known := map[string]bool{}
	asRead := func(sb store.Sandbox) func(*store.Sandbox) error {
		return func(x *store.Sandbox) error {
			if x.Version != sb.Version {
				return errNotDue
			}
			return nil
		}
	}
	for _, sb := range records {
		known[sb.ID] = true
		a, ok := onAgent[sb.ID]
		switch {
		case !ok:
			if sb.State == store.StateStarting {
				continue // a create in flight from another replica
			}
			// Claimed (stopping) first, so nothing that changed it since the read is undone.
			unchanged := asRead(sb)
			if _, err := s.store.UpdateSandbox(ctx, sb.ID, func(x *store.Sandbox) error {
				if err := unchanged(x); err != nil {
					return err
				}
				x.State = store.StateStopping
				return nil
			}); err != nil {
				continue
			}
			s.log.Warn("reconcile: agent no longer has sandbox; dropping it", "sandbox", sb.ID, "host", h.ID)
			s.store.DeleteSandbox(ctx, sb.ID)
			s.events.add(sb.ID, "error", "sandbox lost: its agent no longer has it")
		case a.GetState() == pb.State_STATE_RUNNING && (sb.State == store.StatePaused || sb.State == store.StateLost),
			a.GetState() == pb.State_STATE_PAUSED && (sb.State == store.StateRunning || sb.State == store.StateLost):
			state := store.StateRunning
			if a.GetState() == pb.State_STATE_PAUSED {
				state = store.StatePaused
			}
			unchanged := asRead(sb)
			// Only from the record read above: a kill that began meanwhile wins.
			if _, err := s.store.UpdateSandbox(ctx, sb.ID, func(x *store.Sandbox) error {
				if err := unchanged(x); err != nil {
					return err
				}
				x.State = state
				return nil
			}); err == nil && sb.State == store.StateLost {
				s.log.Info("reconcile: lost sandbox is back with its host", "sandbox", sb.ID, "host", h.ID, "state", state)
				s.events.add(sb.ID, "info", "sandbox back: its host agent "+h.ID+" is responding again")
			}
		}
	}
	for id, a := range onAgent {
		if known[id] || a.GetState() == pb.State_STATE_STARTING {
			continue
		}
		// A sandbox moving onto this host right now (resumed here, its record not yet
		// pointing here) is not a stranger: read again before destroying.
		if cur, err := s.store.Sandbox(ctx, id); err == nil && (cur.HostID == h.ID || cur.State == store.StateResuming) {
			continue
		}
		s.log.Warn("reconcile: destroying sandbox the control plane does not know", "sandbox", id, "host", h.ID)
		s.agents.client(h).Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id}))
	}
}
