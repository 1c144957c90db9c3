package agent

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/template"
)

// SetTemplateArtifactDropper makes DeleteTemplate also drop a deleted template's upload from
// the artifacts store (agents with --artifacts).
func (a *Agent) SetTemplateArtifactDropper(drop func(ctx context.Context, name string) error) {
	a.dropArtifact = drop
}

// DeleteTemplate implements hostagent.v1: it removes a template version nothing here uses.
// The control plane only asks for builds no tag, sandbox or snapshot of its records uses;
// this host checks its own records as well, so a sandbox the control plane does not know of
// (yet) never loses its template.
func (a *Agent) DeleteTemplate(ctx context.Context, req *connect.Request[pb.DeleteTemplateRequest]) (*connect.Response[pb.DeleteTemplateResponse], error) {
	name := req.Msg.GetTemplate()
	if err := template.CheckName(name); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if a.buildDataDir == "" {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this agent keeps no API-built templates"))
	}
	for _, sb := range a.mgr.List() {
		if sb.Template == name {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("template %s is used by sandbox %s (%s)", name, sb.ID, sb.State))
		}
	}
	snaps, err := a.mgr.Snapshots()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("list snapshots: %w", err))
	}
	for _, sn := range snaps {
		if sn.Template == name {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("template %s is used by snapshot %s", name, sn.ID))
		}
	}
	// Pooled sandboxes are no create's: they go first, and the pool boots the version no more.
	a.mgr.DropWarmTemplate(ctx, name)
	deleted, err := template.Remove(ctx, a.buildDataDir, name)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	// The runtime's own copy (gVisor's snapshot of the started sandbox) goes too, even when
	// the template's files were already gone: an earlier delete may have stopped between.
	if err := a.mgr.DropTemplate(ctx, name); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if a.dropArtifact != nil {
		if err := a.dropArtifact(ctx, name); err != nil {
			// The files here are gone; a manifest left in the store only costs space.
			a.log.Warn("drop deleted template's upload from the artifacts store", "template", name, "err", err)
		}
	}
	if deleted {
		a.log.Info("template deleted", "template", name)
	}
	return connect.NewResponse(&pb.DeleteTemplateResponse{Deleted: deleted}), nil
}
