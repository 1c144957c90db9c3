package cp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// Snapshots are E2B's: a copy of a running sandbox (files, memory, processes) that outlives
// it and that Sandbox.create(snapshotId) starts new sandboxes from. As on E2B they share the
// template namespace: the create body's templateID may name one, and DELETE
// /templates/{id} removes one. Each is kept on the host that took it (under the agent's
// data dir), and sandboxes from it start there.

// snapshotTag is the only tag Hearth's snapshots have: a name taken again replaces the
// snapshot instead of adding a tag.
const snapshotTag = "default"

func snapshotJSON(sn store.Snapshot) api.SnapshotInfo {
	if sn.Name != "" {
		full := sn.Name + ":" + snapshotTag
		return api.SnapshotInfo{SnapshotID: full, Names: []string{full}}
	}
	return api.SnapshotInfo{SnapshotID: sn.ID + ":" + snapshotTag, Names: []string{}}
}

// snapshotKey turns a snapshot reference as E2B's SDKs pass it ("id", "name", "name:default",
// "team/name:default") into the ID or name to look up. A tag other than default, or a
// reference that cannot be a name, gives ok false; a namespaced one must be tagged, as the
// SDKs give them. The namespace is not compared: lookups are scoped to the caller's team.
func snapshotKey(ref string) (key string, ok bool) {
	ns, rest, namespaced := strings.Cut(ref, "/")
	if namespaced {
		if template.CheckName(ns) != nil || !strings.Contains(rest, ":") {
			return "", false
		}
		ref = rest
	}
	if name, tag, found := strings.Cut(ref, ":"); found {
		if tag != snapshotTag {
			return "", false
		}
		ref = name
	}
	return ref, template.CheckName(ref) == nil
}

// createSnapshot is POST /sandboxes/{id}/snapshots.
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var body api.SnapshotBody
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	sn, err := s.snapshot(r.Context(), r.PathValue("id"), body.Name)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, snapshotJSON(sn))
}

// snapshot copies running sandbox id into a new snapshot on its host and records it. A name
// another snapshot of the team has is taken over: that snapshot is deleted (E2B assigns the
// new build to the existing name).
func (s *Server) snapshot(ctx context.Context, id, name string) (store.Snapshot, error) {
	if name != "" {
		key, ok := snapshotKey(name)
		if !ok || strings.Contains(name, "/") {
			return store.Snapshot{}, errorf(http.StatusBadRequest, "snapshot name %q: want %s, optionally followed by :%s", name, template.NameForm, snapshotTag)
		}
		name = key
		if _, err := s.store.Template(ctx, name); err == nil {
			return store.Snapshot{}, errorf(http.StatusConflict, "snapshot name %q is a template's: choose another name", name)
		}
	}
	src, err := s.store.Sandbox(ctx, id)
	if err != nil {
		return store.Snapshot{}, sandboxErr(id, err)
	}
	if src.State != store.StateRunning {
		return store.Snapshot{}, errorf(http.StatusConflict, "sandbox %s is %s: only a running sandbox can be snapshotted (connect to it first)", id, src.State)
	}
	host, err := s.store.Host(ctx, src.HostID)
	if err != nil || host.State != store.HostReady {
		return store.Snapshot{}, errorf(http.StatusServiceUnavailable, "host %s of sandbox %s is not available", src.HostID, id)
	}
	snapID := newSandboxID()
	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	defer cancel()
	s.events.add(id, "info", "taking snapshot "+snapID)
	res, err := s.agents.client(host).CreateSnapshot(actx, connect.NewRequest(&pb.CreateSnapshotRequest{SandboxId: id, SnapshotId: snapID}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnimplemented {
			return store.Snapshot{}, errorf(http.StatusNotImplemented, "snapshot %s: %s", id, connectMessage(err))
		}
		return store.Snapshot{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	sn := store.Snapshot{
		ID: snapID, Name: name, TeamID: src.TeamID, SourceSandboxID: id, HostID: host.ID,
		TemplateID: src.TemplateID, Alias: src.Alias, BuildID: src.BuildID, CPUs: src.CPUs, MemoryMiB: src.MemoryMiB,
		DiskMiB: int(res.Msg.GetSnapshot().GetDiskMib()), EnvdVersion: src.EnvdVersion,
		SizeBytes: int64(res.Msg.GetSnapshot().GetSizeBytes()), CreatedAt: time.Now().UTC(),
	}
	replaced, err := s.store.CreateSnapshot(ctx, sn)
	if err != nil {
		s.dropSnapshotFiles(context.WithoutCancel(ctx), sn)
		return store.Snapshot{}, fmt.Errorf("record snapshot %s: %w", snapID, err)
	}
	if replaced != nil {
		s.dropSnapshotFiles(context.WithoutCancel(ctx), *replaced)
	}
	s.events.add(id, "info", "snapshot "+snapID+" taken")
	return sn, nil
}

// connectMessage is a Connect error's message without its code prefix.
func connectMessage(err error) string {
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// dropSnapshotFiles removes a snapshot's files from its host; a host that is gone or down
// keeps them (logged), since the record is what makes a snapshot usable.
func (s *Server) dropSnapshotFiles(ctx context.Context, sn store.Snapshot) {
	host, err := s.store.Host(ctx, sn.HostID)
	if err != nil || host.State != store.HostReady {
		s.log.Warn("snapshot files left on an unavailable host", "snapshot", sn.ID, "host", sn.HostID)
		return
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
	defer cancel()
	if _, err := s.agents.client(host).DeleteSnapshot(actx, connect.NewRequest(&pb.DeleteSnapshotRequest{SnapshotId: sn.ID})); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		s.log.Warn("delete snapshot files", "snapshot", sn.ID, "host", sn.HostID, "err", err)
	}
}

// listSnapshots is GET /snapshots: newest first, paged by limit and nextToken as
// GET /v2/sandboxes, filtered by sandboxID and name (a name or ID, optionally tagged).
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.SnapshotFilter{TeamID: teamOf(r.Context()), SourceSandboxID: q.Get("sandboxID"), Cursor: q.Get("nextToken")}
	if f.TeamID == "" {
		fail(w, errors.New("list snapshots: request has no team"))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1 to 100, got %q", l))
			return
		}
		f.Limit = n
	}
	if n := q.Get("name"); n != "" {
		key, ok := snapshotKey(n)
		if !ok {
			writeJSON(w, http.StatusOK, []api.SnapshotInfo{}) // no snapshot can have it
			return
		}
		f.NameOrID = key
	}
	page, next, err := s.store.ListSnapshots(r.Context(), f)
	if err != nil {
		if errors.Is(err, store.ErrInvalidCursor) {
			err = errorf(http.StatusBadRequest, "nextToken is not one this API returned")
		}
		fail(w, err)
		return
	}
	out := make([]api.SnapshotInfo, 0, len(page))
	for _, sn := range page {
		out = append(out, snapshotJSON(sn))
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteTemplate is DELETE /templates/{id}, which the SDKs' deleteSnapshot calls. Hearth
// deletes snapshots here; templates are removed on their hosts.
func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("id")
	sn, found, err := s.findSnapshot(r.Context(), ref)
	if err != nil {
		fail(w, err)
		return
	}
	if !found {
		if _, err := s.visibleTemplate(r.Context(), ref); err == nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s is a template, not a snapshot: templates are removed on their hosts, not through the API", ref))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("snapshot %s not found", ref))
		return
	}
	if err := s.deleteSnapshot(r.Context(), sn); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteSnapshot removes a snapshot's files from its host and then its record. Sandboxes
// started from it keep running: each loaded all it needed when it started. A host that was
// removed takes the files with it; one that is down makes the delete wait (503).
func (s *Server) deleteSnapshot(ctx context.Context, sn store.Snapshot) error {
	host, err := s.store.Host(ctx, sn.HostID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case host.State != store.HostReady:
		return errorf(http.StatusServiceUnavailable, "snapshot %s is kept on host %s, which is not available: try again when it is", sn.ID, sn.HostID)
	default:
		actx, cancel := context.WithTimeout(ctx, s.cfg.CreateTimeout)
		defer cancel()
		if _, err := s.agents.client(host).DeleteSnapshot(actx, connect.NewRequest(&pb.DeleteSnapshotRequest{SnapshotId: sn.ID})); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
			return fmt.Errorf("delete snapshot %s on host %s: %w", sn.ID, sn.HostID, err)
		}
	}
	if err := s.store.DeleteSnapshot(ctx, sn.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "snapshot %s not found", sn.ID)
		}
		return err
	}
	return nil
}

// findSnapshot looks a snapshot reference up in the caller's team.
func (s *Server) findSnapshot(ctx context.Context, ref string) (store.Snapshot, bool, error) {
	key, ok := snapshotKey(ref)
	if !ok {
		return store.Snapshot{}, false, nil
	}
	team := teamOf(ctx)
	if team == "" {
		return store.Snapshot{}, false, errors.New("find snapshot: request has no team")
	}
	sn, err := s.store.Snapshot(ctx, team, key)
	if errors.Is(err, store.ErrNotFound) {
		return store.Snapshot{}, false, nil
	}
	return sn, err == nil, err
}

// snapshotFor resolves the templateID of a create: a template of that ID or alias wins, then
// a snapshot. A reference only a snapshot can have (tagged or namespaced) that matches none
// is a 404.
func (s *Server) snapshotFor(ctx context.Context, templateID string) (store.Snapshot, bool, error) {
	// A template's name, tagged or not (name:default is both a template's default tag and
	// a snapshot's reference: the template wins, as for the bare name).
	if alias, _, _ := strings.Cut(templateID, ":"); template.CheckName(alias) == nil {
		if _, err := s.visibleTemplate(ctx, alias); err == nil {
			return store.Snapshot{}, false, nil
		}
	}
	sn, found, err := s.findSnapshot(ctx, templateID)
	if err != nil || found {
		return sn, found, err
	}
	if _, ok := snapshotKey(templateID); ok && strings.Contains(templateID, ":") {
		return store.Snapshot{}, false, errorf(http.StatusNotFound, "snapshot %s not found", templateID)
	}
	return store.Snapshot{}, false, nil
}
