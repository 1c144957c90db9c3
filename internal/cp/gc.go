package cp

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
)

// Garbage collection of template versions: a ready API build that no tag points at and no
// sandbox (running, paused or lost) or snapshot records is deleted from the agents, and
// from the artifacts store by the agent that uploaded it. Every replica runs it; a build is
// claimed with a compare-and-set on its record (DeletedAt), so exactly one replica deletes
// it. A host that is down, or does not answer, keeps its copy until it is back: every
// heartbeat lists the versions the host holds, and one whose build is recorded deleted is
// deleted there then (dropDeletedCopy), so nothing has to remember which hosts missed it.
const (
	// gcEvery is how often every template's builds are looked at; a tag moving or going
	// starts a pass at once too.
	gcEvery = time.Minute
	// gcGrace spares builds that became ready this recently: their tags are being set.
	gcGrace = 10 * time.Second
	// gcRetryAfter is how long a build is recorded deleted before a heartbeat's copy of it
	// is deleted: longer than a collection takes, which may still give the build back
	// (a host refused) and must not find copies deleted behind its back.
	gcRetryAfter = 5 * time.Minute
)

var errNotCollectable = errors.New("build is not collectable")

// collectSoon starts a collection pass without waiting for the next tick.
func (s *Server) collectSoon() {
	select {
	case s.gcKick <- struct{}{}:
	default:
	}
}

// gcLoop runs collectBuilds every gcEvery and when kicked, until ctx ends; a pass that
// spared a build only for its grace period runs again when that ends.
func (s *Server) gcLoop(ctx context.Context) {
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	again := time.NewTimer(gcEvery)
	defer again.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.gcKick:
		case <-again.C:
		}
		if _, wait := s.collectPass(ctx); wait > 0 {
			again.Reset(wait)
		}
	}
}

// collectBuilds deletes every collectable build and returns how many it deleted.
func (s *Server) collectBuilds(ctx context.Context) int {
	n, _ := s.collectPass(ctx)
	return n
}

// collectPass is collectBuilds; wait, when above 0, is when the first build spared only for
// its grace period becomes collectable.
func (s *Server) collectPass(ctx context.Context) (n int, wait time.Duration) {
	tpls, err := s.store.ListTemplates(ctx)
	if err != nil {
		s.log.Warn("template gc: list templates", "err", err)
		return 0, 0
	}
	now := time.Now().UTC()
	for _, tpl := range tpls {
		builds, err := s.store.ListTemplateBuilds(ctx, tpl.ID)
		if err != nil {
			s.log.Warn("template gc: list builds", "template", tpl.ID, "err", err)
			continue
		}
		for _, b := range builds {
			if left := s.gcGrace - now.Sub(b.FinishedAt); left > 0 && b.Status == store.BuildReady && b.AgentTemplate != "" && b.DeletedAt.IsZero() {
				if wait == 0 || left < wait {
					wait = left + 100*time.Millisecond
				}
				continue
			}
			if s.collectBuild(ctx, b) {
				n++
			}
		}
	}
	return n, wait
}

// collectable reports whether b may be deleted as far as its record says: a ready version
// of its own (builds from before versions share the template's directory), not claimed,
// ready for longer than the grace period.
func (s *Server) collectable(b store.TemplateBuild, now time.Time) bool {
	return b.Status == store.BuildReady && b.AgentTemplate != "" && b.DeletedAt.IsZero() &&
		now.Sub(b.FinishedAt) >= s.gcGrace
}

// collectBuild deletes b if nothing uses it. The claim is written before the users are
// counted again, and a create writes its sandbox's record before it reads the build again
// (createFromBuild): of a collection and a create racing for one build, at least one sees
// the other, so a sandbox never starts from a build being deleted.
func (s *Server) collectBuild(ctx context.Context, b store.TemplateBuild) bool {
	now := time.Now().UTC()
	if !s.collectable(b, now) {
		return false
	}
	if users, err := s.store.TemplateBuildUsers(ctx, b.ID); err != nil || users > 0 {
		return false
	}
	if _, err := s.store.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
		if !s.collectable(*x, now) {
			return errNotCollectable // another replica claimed it, or it changed
		}
		x.DeletedAt = now
		return nil
	}); err != nil {
		return false
	}
	release := func(why string) bool {
		s.log.Info("template gc: build kept", "build", b.ID, "why", why)
		_, _ = s.store.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
			x.DeletedAt = time.Time{}
			return nil
		})
		return false
	}
	if users, err := s.store.TemplateBuildUsers(ctx, b.ID); err != nil {
		return release("counting its users failed: " + err.Error())
	} else if users > 0 {
		return release("it got a user while being claimed")
	}
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return release("listing hosts failed: " + err.Error())
	}
	for _, h := range hosts {
		if h.State != store.HostReady {
			// Its copy goes when it is back: its heartbeat lists it (dropDeletedCopy).
			s.log.Warn("template gc: host down, its copy of the build goes when it is back", "build", b.ID, "host", h.ID)
			continue
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
		_, err := s.agents.client(h).DeleteTemplate(actx, connect.NewRequest(&pb.DeleteTemplateRequest{Template: b.AgentName()}))
		cancel()
		switch connect.CodeOf(err) {
		case connect.CodeFailedPrecondition:
			// The host has a sandbox or snapshot of it that the records do not (yet) show.
			return release("host " + h.ID + " still uses it: " + err.Error())
		case connect.CodeUnimplemented:
		default:
			if err != nil {
				s.log.Warn("template gc: delete on host", "build", b.ID, "host", h.ID, "err", err)
			}
		}
	}
	s.log.Info("template gc: build deleted", "template", b.TemplateID, "build", b.ID)
	return true
}

// dropDeletedCopy deletes host h's copy of build b, which its heartbeat listed though the
// records say b is deleted: h was down or did not answer when b was collected. It runs in
// the background, one at a time per host and version; the next heartbeat tries again if
// this one fails. The host refuses as usual if a sandbox of its own uses the version.
func (s *Server) dropDeletedCopy(ctx context.Context, h store.Host, b store.TemplateBuild) {
	if time.Since(b.DeletedAt) < s.gcRetryAfter {
		return // its collection may still be under way
	}
	key := h.ID + "/" + b.AgentName()
	if _, busy := s.gcRetrying.LoadOrStore(key, true); busy {
		return
	}
	go func() {
		defer s.gcRetrying.Delete(key)
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CreateTimeout)
		defer cancel()
		_, err := s.agents.client(h).DeleteTemplate(actx, connect.NewRequest(&pb.DeleteTemplateRequest{Template: b.AgentName()}))
		switch {
		case err == nil:
			s.log.Info("template gc: a returned host's copy of a deleted build deleted", "build", b.ID, "host", h.ID)
		case connect.CodeOf(err) == connect.CodeFailedPrecondition, connect.CodeOf(err) == connect.CodeUnimplemented:
			s.log.Debug("template gc: host keeps its copy of a deleted build", "build", b.ID, "host", h.ID, "why", err)
		default:
			s.log.Warn("template gc: delete a returned host's copy", "build", b.ID, "host", h.ID, "err", err)
		}
	}()
}
