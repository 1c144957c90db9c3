package cp

// Template tags and versions (E2B's name:tag):
//
//	POST   /templates/tags              {"target":"name[:tag]","tags":[...]} → 201 {tags, buildID}
//	DELETE /templates/tags              {"name":"name","tags":[...]}         → 204
//	GET    /templates/{templateID}/tags                                      → 200 [{tag, buildID, createdAt}]
//
// A tag points at one ready build of an API template; the bare name means tag "default". Each
// ready build is a version of its own on the agents (TemplateBuild.AgentTemplate), which a
// rebuild never replaces: sandboxes boot, pause and resume the version they were created
// from. Builds no tag, sandbox or snapshot uses are deleted from the agents (collectBuilds).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// resolved is a template reference resolved to the build it boots.
type resolved struct {
	tpl store.Template
	// build is the tagged API build; nil for templates the agents build themselves (and for
	// API templates from before tags that have no tag yet).
	build *store.TemplateBuild
	tag   string
}

// agentName is the name the agents keep the resolved version under.
func (r resolved) agentName() string {
	if r.build != nil {
		return r.build.AgentName()
	}
	return r.tpl.ID
}

// artifact is the manifest digest of the resolved version in the agents' artifacts store.
func (r resolved) artifact() string {
	if r.build != nil {
		return r.build.Artifact
	}
	return r.tpl.Artifact
}

// buildID is the resolved API build's ID, "" for a template the agents build themselves.
func (r resolved) buildID() string {
	if r.build != nil {
		return r.build.ID
	}
	return ""
}

// shapeOf is the size a create of r boots: a version keeps the size it was built with,
// other templates have theirs, and the control plane's defaults fill what is unset. disk is
// the template's disk size, 0 for the agent's default.
func (s *Server) shapeOf(r resolved) (cpus, mem, disk int) {
	cpus, mem, disk = r.tpl.CPUs, r.tpl.MemoryMiB, r.tpl.DiskMiB
	if b := r.build; b != nil && b.CPUs > 0 {
		cpus, mem = b.CPUs, b.MemoryMiB
	}
	if cpus <= 0 {
		cpus = s.cfg.DefaultCPUs
	}
	if mem <= 0 {
		mem = s.cfg.DefaultMemoryMiB
	}
	return cpus, mem, disk
}

// versionName is the name a new API build is kept under on the agents: the template ID and
// the build ID, a valid template name (at most 57 characters) that no rebuild reuses.
// template.VersionBuild reads the build ID back.
func versionName(templateID, buildID string) string { return templateID + "-" + buildID }

// resolveTemplate resolves `name[:tag]` (or a template ID) among the templates the caller's
// team may use. A tag must exist: an unknown one is a 404, as on E2B. Templates built on
// the agents (`hearth template build`) have only the default tag.
func (s *Server) resolveTemplate(ctx context.Context, ref string) (resolved, error) {
	n, err := parseTemplateName(ref)
	if err != nil {
		return resolved{}, err
	}
	tpl, err := s.visibleTemplate(ctx, n.alias)
	if errors.Is(err, store.ErrNotFound) {
		return resolved{}, errorf(http.StatusNotFound, "template %q not found: build it on an agent with `hearth template build %s`, or through the API", n.alias, n.alias)
	} else if err != nil {
		return resolved{}, err
	}
	out := resolved{tpl: tpl, tag: n.tag}
	tag, err := s.store.TemplateTag(ctx, tpl.ID, n.tag)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// A template built on the agents has no tags, and its one version is the default;
		// so has an API template with no ready build yet. Any other tag must exist.
		if n.tag != store.DefaultTag || s.hasTags(ctx, tpl.ID) {
			return resolved{}, errorf(http.StatusNotFound, "tag %q of template %q not found", n.tag, n.alias)
		}
		return out, nil // a template built on the agents, or an API one with no ready build yet
	case err != nil:
		return resolved{}, err
	}
	b, err := s.store.TemplateBuild(ctx, tag.BuildID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !b.DeletedAt.IsZero()) {
		return resolved{}, errorf(http.StatusNotFound, "tag %q of template %q names build %s, which is gone", n.tag, n.alias, tag.BuildID)
	} else if err != nil {
		return resolved{}, err
	}
	out.build = &b
	return out, nil
}

// hasTags reports whether the template has any tag.
func (s *Server) hasTags(ctx context.Context, templateID string) bool {
	ts, err := s.store.ListTemplateTags(ctx, templateID)
	return err == nil && len(ts) > 0
}

// buildTags are the tags a build request asks for: the name's tag and the tags list, lower
// case, each once; none means "default".
func buildTags(n templateName, extra []string) ([]string, error) {
	var tags []string
	if n.tag != "" && n.tag != store.DefaultTag {
		tags = append(tags, n.tag)
	}
	for _, t := range extra {
		t = strings.ToLower(strings.TrimSpace(t))
		if err := checkTag(t, true); err != nil {
			return nil, err
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		tags = []string{store.DefaultTag}
	}
	return tags, nil
}

// tagBuild points tags of b's template at b. Right after, b is read again: if garbage
// collection claimed it meanwhile (it only claims builds no tag names, so a tag moved off
// and back in that instant), the tags are dropped again and the caller is told.
func (s *Server) tagBuild(ctx context.Context, b store.TemplateBuild, tags []string) error {
	now := time.Now().UTC()
	for _, t := range tags {
		if err := s.store.SetTemplateTag(ctx, store.TemplateTag{TemplateID: b.TemplateID, Tag: t, BuildID: b.ID, CreatedAt: now}); err != nil {
			return err
		}
	}
	cur, err := s.store.TemplateBuild(ctx, b.ID)
	if err != nil {
		return err
	}
	if !cur.DeletedAt.IsZero() {
		for _, t := range tags {
			if tt, err := s.store.TemplateTag(ctx, b.TemplateID, t); err == nil && tt.BuildID == b.ID {
				_ = s.store.DeleteTemplateTag(ctx, b.TemplateID, t)
			}
		}
		return errorf(http.StatusConflict, "build %s was deleted while being tagged: tag another build", b.ID)
	}
	s.collectSoon()
	return nil
}

// ownedAPITemplate finds API template ref (a name, template ID, without a tag) for a tag
// call: 404 when the caller's team cannot see it, 403 when it is another team's public one.
func (s *Server) ownedAPITemplate(ctx context.Context, ref string) (store.Template, error) {
	if template.CheckName(ref) != nil {
		return store.Template{}, errorf(http.StatusBadRequest, "Invalid name: %q: want %s", ref, template.NameForm)
	}
	tpl, err := s.visibleTemplate(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return store.Template{}, errorf(http.StatusNotFound, "template %q not found", ref)
	} else if err != nil {
		return store.Template{}, err
	}
	if tpl.TeamID != teamOf(ctx) {
		return store.Template{}, errorf(http.StatusForbidden, "template %q is another team's: only its owner can tag it", ref)
	}
	managed, err := s.apiManaged(ctx, tpl.ID)
	if err != nil {
		return store.Template{}, err
	}
	if !managed {
		return store.Template{}, errorf(http.StatusBadRequest, "template %q is built on the agents (`hearth template build`), which keeps one version: only templates built through the API have tags", ref)
	}
	return tpl, nil
}

// checkTags validates the tags of a tag call: at least one, each of tag form.
func checkTags(raw []string) ([]string, error) {
	if len(raw) == 0 {
		return nil, errorf(http.StatusBadRequest, "tags is required: give at least one tag")
	}
	var out []string
	for _, t := range raw {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "" {
			return nil, errorf(http.StatusBadRequest, "Invalid tag: empty tag")
		}
		if err := checkTag(t, true); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (s *Server) assignTemplateTags(w http.ResponseWriter, r *http.Request) {
	var req api.AssignTemplateTagsRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	n, err := parseTemplateName(req.Target)
	if err != nil {
		fail(w, err)
		return
	}
	tags, err := checkTags(req.Tags)
	if err != nil {
		fail(w, err)
		return
	}
	ctx := r.Context()
	tpl, err := s.ownedAPITemplate(ctx, n.alias)
	if err != nil {
		fail(w, err)
		return
	}
	target, err := s.resolveTemplate(ctx, tpl.ID+":"+n.tag)
	if err != nil {
		fail(w, err)
		return
	}
	if target.build == nil {
		fail(w, errorf(http.StatusNotFound, "tag %q of template %q not found", n.tag, n.alias))
		return
	}
	if err := s.tagBuild(ctx, *target.build, tags); err != nil {
		fail(w, err)
		return
	}
	s.log.Info("template tags assigned", "template", tpl.ID, "build", target.build.ID, "tags", tags)
	writeJSON(w, http.StatusCreated, api.AssignedTemplateTags{Tags: tags, BuildID: target.build.ID})
}

func (s *Server) deleteTemplateTags(w http.ResponseWriter, r *http.Request) {
	var req api.DeleteTemplateTagsRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	name := strings.ToLower(strings.TrimSpace(req.Name))
	if name == "" {
		fail(w, errorf(http.StatusBadRequest, "name is required"))
		return
	}
	if strings.Contains(name, ":") {
		fail(w, errorf(http.StatusBadRequest, "name %q contains a tag: give the template name alone, and the tags to remove in tags", req.Name))
		return
	}
	tags, err := checkTags(req.Tags)
	if err != nil {
		fail(w, err)
		return
	}
	if slices.Contains(tags, store.DefaultTag) {
		fail(w, errorf(http.StatusBadRequest, "the default tag cannot be removed: point it at another build with POST /templates/tags instead"))
		return
	}
	ctx := r.Context()
	tpl, err := s.ownedAPITemplate(ctx, name)
	if err != nil {
		fail(w, err)
		return
	}
	for _, t := range tags {
		if _, err := s.store.TemplateTag(ctx, tpl.ID, t); errors.Is(err, store.ErrNotFound) {
			fail(w, errorf(http.StatusNotFound, "tag %q of template %q not found", t, name))
			return
		} else if err != nil {
			fail(w, err)
			return
		}
	}
	for _, t := range tags {
		if err := s.store.DeleteTemplateTag(ctx, tpl.ID, t); err != nil && !errors.Is(err, store.ErrNotFound) {
			fail(w, err)
			return
		}
	}
	s.log.Info("template tags removed", "template", tpl.ID, "tags", tags)
	s.collectSoon()
	w.WriteHeader(http.StatusNoContent)
}

// templateSub serves GET /templates/aliases/{alias} and GET /templates/{templateID}/tags.
func (s *Server) templateSub(w http.ResponseWriter, r *http.Request) {
	id, sub := r.PathValue("templateID"), r.PathValue("sub")
	switch {
	case id == "aliases":
		r.SetPathValue("alias", sub)
		s.templateAlias(w, r)
	case sub == "tags":
		s.listTemplateTags(w, r)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: GET %s", r.URL.Path))
	}
}

func (s *Server) listTemplateTags(w http.ResponseWriter, r *http.Request) {
	ref := strings.ToLower(strings.TrimSpace(r.PathValue("templateID")))
	ctx := r.Context()
	tpl, err := s.visibleTemplate(ctx, ref)
	if errors.Is(err, store.ErrNotFound) || (err == nil && template.CheckName(ref) != nil) {
		fail(w, errorf(http.StatusNotFound, "template %q not found", ref))
		return
	} else if err != nil {
		fail(w, err)
		return
	}
	if tpl.TeamID != teamOf(ctx) {
		fail(w, errorf(http.StatusForbidden, "template %q is another team's: only its owner can list its tags", ref))
		return
	}
	tags, err := s.store.ListTemplateTags(ctx, tpl.ID)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]api.TemplateTagJSON, 0, len(tags))
	for _, t := range tags {
		out = append(out, api.TemplateTagJSON{Tag: t.Tag, BuildID: t.BuildID, CreatedAt: t.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}
