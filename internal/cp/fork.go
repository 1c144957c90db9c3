package cp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// maxForks is E2B's bound on one fork's count.
const maxForks = 100

// forkSandbox copies a running sandbox into count new ones on its host: files, memory and
// running processes; the parent runs on. Each child has its own ID, tokens and deadline,
// the parent's metadata, environment, lifecycle and network settings.
func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) {
	var body api.ForkBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	count := 1
	if body.Count != nil {
		count = *body.Count
	}
	if count < 1 || count > maxForks {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("count must be 1 to %d, got %d", maxForks, count))
		return
	}
	ttl, err := s.timeoutFor(body.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	id := r.PathValue("id")
	parent, err := s.store.Sandbox(r.Context(), id)
	if err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	if parent.State != store.StateRunning {
		fail(w, errorf(http.StatusConflict, "sandbox %s is %s: only a running sandbox can be forked (connect to it first)", id, parent.State))
		return
	}
	host, err := s.store.Host(r.Context(), parent.HostID)
	if err != nil || host.State != store.HostReady {
		fail(w, errorf(http.StatusServiceUnavailable, "host %s of sandbox %s is not available", parent.HostID, id))
		return
	}
	results, err := s.fork(r.Context(), parent, host, count, ttl)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, results)
}

func (s *Server) fork(ctx context.Context, parent store.Sandbox, host store.Host, count int, ttl time.Duration) ([]api.ForkResult, error) {
	now := time.Now().UTC()
	var children []store.Sandbox
	req := &pb.ForkRequest{SandboxId: parent.ID}
	cleanup := func() {
		for _, c := range children {
			_ = s.store.DeleteSandbox(context.WithoutCancel(ctx), c.ID)
		}
	}
	for range count {
		c := parent
		c.ID, c.State, c.StartedAt, c.EndAt = newSandboxID(), store.StateStarting, now, now.Add(ttl)
		c.Metadata, c.EnvVars = maps.Clone(parent.Metadata), maps.Clone(parent.EnvVars)
		c.Secure, c.EnvdAccessToken, c.TrafficAccessToken = true, randomToken(), randomToken()
		if err := s.store.CreateSandbox(ctx, c); err != nil {
			cleanup()
			return nil, err
		}
		s.events.own(c.ID, c.TeamID)
		children = append(children, c)
		req.Children = append(req.Children, &pb.ForkChild{
			SandboxId: c.ID, EnvdAccessToken: c.EnvdAccessToken, EnvVars: withSandboxEnv(c), Metadata: c.Metadata,
		})
	}
	s.events.add(parent.ID, "info", fmt.Sprintf("forking into %d sandboxes", count))
	// Restores run one after another on the agent.
	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout*time.Duration(1+count))
	defer cancel()
	res, err := s.agents.client(host).Fork(actx, connect.NewRequest(req))
	if err != nil {
		cleanup()
		if ce := new(connect.Error); errors.As(err, &ce) && ce.Code() == connect.CodeUnimplemented {
			return nil, errorf(http.StatusNotImplemented, "fork %s: %s", parent.ID, ce.Message())
		}
		return nil, fmt.Errorf("fork %s: %w", parent.ID, err)
	}
	out := make([]api.ForkResult, len(children))
	for i, c := range children {
		var r *pb.ForkResult
		if i < len(res.Msg.GetResults()) {
			r = res.Msg.GetResults()[i]
		}
		if r == nil || r.GetSandbox() == nil {
			msg := "the agent gave no result"
			if r != nil {
				msg = r.GetError()
			}
			_ = s.store.DeleteSandbox(context.WithoutCancel(ctx), c.ID)
			out[i] = api.ForkResult{Error: &api.Error{Code: http.StatusInternalServerError, Message: msg}}
			continue
		}
		sb, err := s.store.UpdateSandbox(ctx, c.ID, func(x *store.Sandbox) error {
			x.State = store.StateRunning
			x.EndAt = time.Now().UTC().Add(ttl)
			return nil
		})
		if err != nil {
			out[i] = api.ForkResult{Error: &api.Error{Code: statusOf(err), Message: err.Error()}}
			continue
		}
		created := s.sandboxResponse(sb)
		out[i] = api.ForkResult{Sandbox: &created}
		s.events.add(sb.ID, "info", "forked from "+parent.ID)
	}
	return out, nil
}
