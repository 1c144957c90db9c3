package cp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hearthsh/hearth/internal/hostreg"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// registerTemplate records a template an agent has built. Templates are built on hosts
// (`hearth template build`), and agents report them in their heartbeats. It returns the
// build of a version that the records say is deleted (see registerVersion).
func (s *Server) registerTemplate(ctx context.Context, ht hostreg.Template) (deleted *store.TemplateBuild) {
	if err := template.CheckName(ht.Name); err != nil {
		s.log.Warn("heartbeat names an invalid template; ignored", "err", err)
		return nil
	}
	if isVersion, deleted := s.registerVersion(ctx, ht); isVersion {
		return deleted
	}
	now := time.Now().UTC()
	t, err := s.store.Template(ctx, ht.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Templates built on a host are the operator's: public to every team.
		t = store.Template{ID: ht.Name, TeamID: store.DefaultTeam, Aliases: []string{ht.Name}, CreatedAt: now, Public: true}
	case err != nil:
		s.log.Warn("look up template", "template", ht.Name, "err", err)
		return nil
	case t.BuildID == ht.Version && t.BuildStatus == "ready" && t.DiskMiB == max(ht.DiskMiB, 0) &&
		(ht.Artifact == "" || t.Artifact == ht.Artifact):
		return nil
	default:
		// Templates built through the API are recorded by their builds, not by heartbeats.
		if managed, err := s.apiManaged(ctx, t.ID); err != nil || managed {
			return nil
		}
	}
	// The artifact names this build: a new build without one (its host has no store, or
	// has not uploaded it yet) leaves none, and an agent without a store never clears the
	// one another uploaded of the same build.
	if ht.Artifact != "" || t.BuildID != ht.Version {
		t.Artifact = ht.Artifact
	}
	t.BuildID, t.BuildStatus, t.EnvdVersion, t.UpdatedAt = ht.Version, "ready", ht.EnvdVersion, now
	t.DiskMiB = max(ht.DiskMiB, 0)
	if t.CPUs == 0 {
		t.CPUs, t.MemoryMiB = s.cfg.DefaultCPUs, s.cfg.DefaultMemoryMiB
	}
	if err := s.store.PutTemplate(ctx, t); err != nil {
		s.log.Warn("register template", "template", ht.Name, "err", err)
	}
	return nil
}

func templateJSON(t store.Template) api.Template {
	return api.Template{
		TemplateID: t.ID, BuildID: t.BuildID, CPUCount: t.CPUs, MemoryMB: t.MemoryMiB, DiskSizeMB: t.DiskMiB,
		Public: t.Public, Aliases: append([]string{}, t.Aliases...), Names: append([]string{}, t.Aliases...),
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, EnvdVersion: t.EnvdVersion, BuildStatus: t.BuildStatus, BuildCount: 1,
	}
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts, err := s.store.ListTemplates(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	team := teamOf(r.Context())
	out := make([]api.Template, 0, len(ts))
	for _, t := range ts {
		if visibleTo(t, team) {
			out = append(out, templateJSON(t))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) {
	if err := checkTemplateName("template ID", r.PathValue("id")); err != nil {
		fail(w, err)
		return
	}
	t, err := s.visibleTemplate(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = errorf(http.StatusNotFound, "template %s not found", r.PathValue("id"))
		}
		fail(w, err)
		return
	}
	var builds []store.TemplateBuild
	if t.TeamID == teamOf(r.Context()) { // a public template's builds are its owner's business
		if builds, err = s.store.ListTemplateBuilds(r.Context(), t.ID); err != nil {
			fail(w, err)
			return
		}
	}
	out := api.TemplateWithBuilds{Template: templateJSON(t), Builds: make([]api.TemplateBuild, 0, len(builds))}
	for _, b := range builds {
		tb := api.TemplateBuild{BuildID: b.ID, Status: b.Status, CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt, CPUCount: b.CPUs, MemoryMB: b.MemoryMiB}
		if !b.FinishedAt.IsZero() {
			tb.FinishedAt = &b.FinishedAt
		}
		out.Builds = append(out.Builds, tb)
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleTo reports whether team may see and use t: its own templates and public ones.
func visibleTo(t store.Template, team string) bool {
	return team != "" && (t.Public || t.TeamID == team)
}

// visibleTemplate finds a template by ID or alias among those the request's team may use;
// another team's private template is ErrNotFound, as if it did not exist.
func (s *Server) visibleTemplate(ctx context.Context, idOrAlias string) (store.Template, error) {
	t, err := s.store.Template(ctx, idOrAlias)
	if err != nil {
		return store.Template{}, err
	}
	if !visibleTo(t, teamOf(ctx)) {
		return store.Template{}, fmt.Errorf("template %s: %w", idOrAlias, store.ErrNotFound)
	}
	return t, nil
}

// registerVersion handles a heartbeat's template that is an API build's version (named
// versionName(templateID, buildID)): no template of its own, but its artifact, once its
// host uploaded it, is recorded on the build so agents without it can fetch it. It reports
// whether ht was such a version, and returns its build when the records say it is deleted
// (the host still holds a copy the collection did not reach).
func (s *Server) registerVersion(ctx context.Context, ht hostreg.Template) (isVersion bool, deleted *store.TemplateBuild) {
	buildID, ok := template.VersionBuild(ht.Name)
	if !ok {
		return false, nil
	}
	b, err := s.store.TemplateBuild(ctx, buildID)
	if err != nil || b.AgentName() != ht.Name {
		return true, nil // a version whose build this control plane does not know: not a template
	}
	if !b.DeletedAt.IsZero() {
		return true, &b
	}
	if ht.Artifact == "" || ht.Artifact == b.Artifact {
		return true, nil
	}
	if _, err := s.store.UpdateTemplateBuild(ctx, b.ID, func(x *store.TemplateBuild) error {
		x.Artifact = ht.Artifact
		return nil
	}); err != nil {
		s.log.Warn("record template version artifact", "build", b.ID, "err", err)
	}
	return true, nil
}
