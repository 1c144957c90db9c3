package cp

import (
	"context"
	"errors"
	"net/http"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// drainHost stops placements on a host and pauses its running sandboxes, one at a time (each
// pause is bounded by CreateTimeout; the request's context ends the walk). Draining a drained
// host again pauses what was resumed on it meanwhile.
func (s *Server) drainHost(w http.ResponseWriter, r *http.Request) {
	id, ok := s.operatorHost(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if err := s.store.SetHostDraining(ctx, id, true); err != nil {
		fail(w, hostErr(id, err))
		return
	}
	s.log.Info("host draining: no new sandboxes, pausing its running ones", "host", id)
	res := api.DrainResult{HostID: id, Paused: []string{}, Failed: []api.DrainFailure{}}
	for _, sbID := range s.runningOn(ctx, id) {
		if ctx.Err() != nil {
			break
		}
		err := s.pause(ctx, sbID, false)
		switch {
		case err == nil:
			res.Paused = append(res.Paused, sbID)
		case statusOf(err) == http.StatusNotFound || statusOf(err) == http.StatusConflict:
			// Killed or paused meanwhile: nothing left to drain.
		default:
			res.Failed = append(res.Failed, api.DrainFailure{SandboxID: sbID, Error: err.Error()})
		}
	}
	if err := ctx.Err(); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// undrainHost lets a host take new sandboxes again.
func (s *Server) undrainHost(w http.ResponseWriter, r *http.Request) {
	id, ok := s.operatorHost(w, r)
	if !ok {
		return
	}
	if err := s.store.SetHostDraining(r.Context(), id, false); err != nil {
		fail(w, hostErr(id, err))
		return
	}
	s.log.Info("host takes new sandboxes again", "host", id)
	w.WriteHeader(http.StatusNoContent)
}

// operatorHost reads the host ID of a host operation, which only the operator's team may do.
func (s *Server) operatorHost(w http.ResponseWriter, r *http.Request) (string, bool) {
	if teamOf(r.Context()) != store.DefaultTeam {
		writeError(w, http.StatusForbidden, "hosts are managed by the operator's team (\"default\") only")
		return "", false
	}
	return r.PathValue("id"), true
}

func hostErr(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "host %s not found: `GET /hearth/v1/hosts` lists them", id)
	}
	return err
}

// runningOn lists the IDs of the running sandboxes on a host.
func (s *Server) runningOn(ctx context.Context, hostID string) []string {
	var ids []string
	cursor := ""
	for {
		page, next, err := s.store.ListSandboxes(ctx, store.SandboxFilter{HostID: hostID, States: []string{store.StateRunning}, Cursor: cursor})
		if err != nil {
			s.log.Warn("list sandboxes of host", "host", hostID, "err", err)
			return ids
		}
		for _, sb := range page {
			ids = append(ids, sb.ID)
		}
		if next == "" {
			return ids
		}
		cursor = next
	}
}
