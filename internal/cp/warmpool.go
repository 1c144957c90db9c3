package cp

import (
	"context"
	"errors"
	"fmt"

	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/store"
)

// resolveWarmPool answers the warm pool refs of a heartbeat (hostreg.Heartbeat.WarmPool):
// each is resolved as a create of it would be, so that an agent pools the version and shape
// the creates of that ref ask for, and follows a tag when it moves to another build.
func (s *Server) resolveWarmPool(ctx context.Context, refs []string) map[string]hostreg.WarmTarget {
	out := make(map[string]hostreg.WarmTarget, len(refs))
	for i, ref := range refs {
		if _, done := out[ref]; done {
			continue
		}
		if i >= hostreg.MaxWarmPoolRefs {
			out[ref] = hostreg.WarmTarget{Error: fmt.Sprintf("a heartbeat may ask about at most %d warm pool refs", hostreg.MaxWarmPoolRefs)}
			continue
		}
		t, err := s.resolveWarmRef(ctx, ref)
		if err != nil {
			t = hostreg.WarmTarget{Error: err.Error()}
		}
		out[ref] = t
	}
	return out
}

// resolveWarmRef resolves one warm pool ref (name[:tag] or templateID[:tag]). The pool is the
// host's, set by its operator, not a team's: the ref may name any team's template and
// resolves as a create by the team that owns it would (resolveTemplate, templateHost and
// shapeOf, as in create). Snapshot IDs are not refs.
func (s *Server) resolveWarmRef(ctx context.Context, ref string) (hostreg.WarmTarget, error) {
	n, err := parseTemplateName(ref)
	if err != nil {
		return hostreg.WarmTarget{}, err
	}
	tpl, err := s.store.Template(ctx, n.alias)
	if errors.Is(err, store.ErrNotFound) {
		return hostreg.WarmTarget{}, fmt.Errorf("template %q not found", n.alias)
	} else if err != nil {
		return hostreg.WarmTarget{}, fmt.Errorf("look up template %q: %w", n.alias, err)
	}
	owner := withCaller(ctx, store.APIKey{TeamID: tpl.TeamID})
	res, err := s.resolveTemplate(owner, ref)
	if err != nil {
		return hostreg.WarmTarget{}, err
	}
	// A template with no ready build yet has nothing to boot.
	if _, err := s.templateHost(owner, res); err != nil {
		return hostreg.WarmTarget{}, err
	}
	cpus, mem, disk := s.shapeOf(res)
	return hostreg.WarmTarget{
		Template: res.agentName(), Artifact: res.artifact(), BuildID: res.buildID(),
		CPUs: cpus, MemoryMiB: mem, DiskMiB: max(disk, 0),
	}, nil
}
