package cp

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
)

// expire kills or pauses running sandboxes whose deadline passed.
func (s *Server) expire(ctx context.Context) {
	due, err := s.store.ExpiredSandboxes(ctx, time.Now().UTC())
	if err != nil {
		s.log.Warn("list expired sandboxes", "err", err)
		return
	}
	for _, sb := range due {
		if sb.AutoPause {
			if err := s.pause(ctx, sb.ID, sb.AutoPauseFilesystemOnly); err != nil {
				s.log.Warn("auto-pause on timeout failed; killing instead", "sandbox", sb.ID, "err", err)
				if err := s.kill(ctx, sb.ID, "killed: timeout (auto-pause failed)"); err != nil {
					s.log.Warn("kill on timeout", "sandbox", sb.ID, "err", err)
				}
				continue
			}
			s.log.Info("sandbox paused on timeout", "sandbox", sb.ID)
			continue
		}
		if err := s.kill(ctx, sb.ID, "killed: timeout"); err != nil {
			s.log.Warn("kill on timeout", "sandbox", sb.ID, "err", err)
			continue
		}
		s.log.Info("sandbox killed on timeout", "sandbox", sb.ID)
	}
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
// agent no longer has are dropped, states are corrected, and sandboxes the store does not
// know are destroyed on the agent.
func (s *Server) reconcileHost(ctx context.Context, h store.Host) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
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
	cursor := ""
	for {
		page, next, err := s.store.ListSandboxes(ctx, store.SandboxFilter{HostID: h.ID, Cursor: cursor})
		if err != nil {
			s.log.Warn("reconcile: list sandboxes", "host", h.ID, "err", err)
			return
		}
		for _, sb := range page {
			known[sb.ID] = true
			a, ok := onAgent[sb.ID]
			switch {
			case !ok:
				if sb.State == store.StateStarting {
					continue // a create in flight from another replica
				}
				s.log.Warn("reconcile: agent no longer has sandbox; dropping it", "sandbox", sb.ID, "host", h.ID)
				s.store.DeleteSandbox(ctx, sb.ID)
				s.events.add(sb.ID, "error", "sandbox lost: its agent no longer has it")
			case a.GetState() == pb.State_STATE_RUNNING && sb.State == store.StatePaused,
				a.GetState() == pb.State_STATE_PAUSED && sb.State == store.StateRunning:
				state := store.StateRunning
				if a.GetState() == pb.State_STATE_PAUSED {
					state = store.StatePaused
				}
				s.store.UpdateSandbox(ctx, sb.ID, func(x *store.Sandbox) error { x.State = state; return nil })
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	for id, a := range onAgent {
		if known[id] || a.GetState() == pb.State_STATE_STARTING {
			continue
		}
		s.log.Warn("reconcile: destroying sandbox the control plane does not know", "sandbox", id, "host", h.ID)
		s.agents.client(h).Destroy(ctx, connect.NewRequest(&pb.DestroyRequest{SandboxId: id}))
	}
}
