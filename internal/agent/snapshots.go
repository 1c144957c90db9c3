package agent

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hearthsh/hearth/internal/agent/sandbox"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
)

// CreateSnapshot copies a running sandbox into a snapshot kept on this host.
func (a *Agent) CreateSnapshot(ctx context.Context, req *connect.Request[pb.CreateSnapshotRequest]) (*connect.Response[pb.CreateSnapshotResponse], error) {
	info, err := a.mgr.Snapshot(ctx, req.Msg.GetSandboxId(), req.Msg.GetSnapshotId())
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&pb.CreateSnapshotResponse{Snapshot: snapshotToProto(info)}), nil
}

// DeleteSnapshot removes a snapshot kept on this host.
func (a *Agent) DeleteSnapshot(ctx context.Context, req *connect.Request[pb.DeleteSnapshotRequest]) (*connect.Response[pb.DeleteSnapshotResponse], error) {
	if err := a.mgr.DeleteSnapshot(ctx, req.Msg.GetSnapshotId()); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&pb.DeleteSnapshotResponse{}), nil
}

// ListSnapshots returns the snapshots kept on this host.
func (a *Agent) ListSnapshots(ctx context.Context, req *connect.Request[pb.ListSnapshotsRequest]) (*connect.Response[pb.ListSnapshotsResponse], error) {
	infos, err := a.mgr.Snapshots()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	res := &pb.ListSnapshotsResponse{}
	for _, i := range infos {
		res.Snapshots = append(res.Snapshots, snapshotToProto(i))
	}
	return connect.NewResponse(res), nil
}

func snapshotToProto(i sandbox.SnapshotInfo) *pb.Snapshot {
	return &pb.Snapshot{
		SnapshotId: i.ID, SourceSandboxId: i.SourceID, Template: i.Template, Cpus: uint32(i.CPUs),
		MemoryMib: uint32(i.MemoryMiB), DiskMib: uint32(i.DiskMiB), SizeBytes: uint64(i.SizeBytes),
		CreatedAt: timestamppb.New(i.CreatedAt),
	}
}
