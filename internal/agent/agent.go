// Package agent is the host agent: it serves the hostagent.v1 API to the control plane and
// proxies traffic to the ports of its sandboxes.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hearthsh/hearth/internal/agent/metricslog"
	"github.com/hearthsh/hearth/internal/agent/sandbox"
	"github.com/hearthsh/hearth/internal/artifacts"
	"github.com/hearthsh/hearth/internal/conntrack"
	"github.com/hearthsh/hearth/internal/envd"
	"github.com/hearthsh/hearth/internal/envd/hoststats"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/proxy"
)

// Agent ties the sandbox manager to the RPC API and the proxy.
type Agent struct {
	mgr     *sandbox.Manager
	conns   *conntrack.Tracker
	proxy   *proxy.Handler
	runtime string
	log     *slog.Logger
	stats   *hoststats.Sampler
	// metrics is the recent history of each sandbox's envd metrics (RunMetrics samples it).
	metrics *metricslog.Log
	// buildDataDir is where BuildTemplate builds templates; empty refuses builds.
	buildDataDir string
	// imageCacheMaxBytes caps the OCI layer cache under buildDataDir (SetImageCacheLimit).
	imageCacheMaxBytes int64
	// dropArtifact removes a deleted template's upload from the artifacts store, if set.
	dropArtifact func(ctx context.Context, name string) error
}

var _ hostagentv1connect.HostAgentServiceHandler = (*Agent)(nil)

// New returns an Agent for a manager whose proxied connections are tracked by conns.
func New(mgr *sandbox.Manager, conns *conntrack.Tracker, runtimeName string, log *slog.Logger) *Agent {
	a := &Agent{mgr: mgr, conns: conns, runtime: runtimeName, log: log, stats: hoststats.NewSampler("/")}
	a.proxy = proxy.New(a.resolve, proxy.Options{StatusFor: proxyStatus, Log: log})
	a.metrics = metricslog.New(metricslog.Config{Targets: a.metricsTargets, Log: log})
	return a
}

// RunMetrics samples the envd metrics of every running sandbox until ctx ends, for the
// Metrics RPC.
func (a *Agent) RunMetrics(ctx context.Context) { a.metrics.Run(ctx) }

func (a *Agent) metricsTargets() []metricslog.Target {
	eps := a.mgr.EnvdEndpoints()
	out := make([]metricslog.Target, len(eps))
	for i, e := range eps {
		out[i] = metricslog.Target{ID: e.ID, Running: e.Running, Addr: e.Target.Addr, Socket: e.Target.Socket, Token: e.AccessToken}
	}
	return out
}

// Metrics returns the metrics history of one sandbox on this host.
func (a *Agent) Metrics(ctx context.Context, req *connect.Request[pb.MetricsRequest]) (*connect.Response[pb.MetricsResponse], error) {
	id := req.Msg.GetSandboxId()
	if _, err := a.mgr.Get(id); err != nil {
		return nil, rpcError(err)
	}
	var start, end time.Time
	if req.Msg.Start != nil {
		start = req.Msg.GetStart().AsTime()
	}
	if req.Msg.End != nil {
		end = req.Msg.GetEnd().AsTime()
	}
	res := &pb.MetricsResponse{}
	for _, s := range a.metrics.Samples(id, start, end) {
		res.Samples = append(res.Samples, &pb.MetricSample{
			Time: timestamppb.New(s.At), CpuCount: s.CPUCount, CpuUsedPct: s.CPUUsedPct, MemTotal: s.MemTotal,
			MemUsed: s.MemUsed, MemCache: s.MemCache, DiskUsed: s.DiskUsed, DiskTotal: s.DiskTotal,
		})
	}
	return connect.NewResponse(res), nil
}

// RPCHandler serves hostagent.v1.
func (a *Agent) RPCHandler() (string, http.Handler) {
	return hostagentv1connect.NewHostAgentServiceHandler(a)
}

// ProxyHandler serves sandbox traffic. Its server must install proxy.ConnContext.
func (a *Agent) ProxyHandler() http.Handler { return a.proxy }

// resolve admits a proxied request: the sandbox must be running, and the connection is
// tracked so a pause can drain it (and end it at once if it turns out to be a stream).
func (a *Agent) resolve(r *http.Request, route proxy.Route) (proxy.Upstream, error) {
	target, err := a.mgr.Target(route.SandboxID, route.Port)
	if err != nil {
		return proxy.Upstream{}, notRunning(route.SandboxID, err)
	}
	c, err := a.conns.Track(route.SandboxID, route.Port, r.Context(), proxy.ConnFrom(r.Context()))
	if err != nil {
		return proxy.Upstream{}, err
	}
	return proxy.Upstream{
		Addr: target.Addr.String(), Socket: target.Socket, Ctx: c.Context(), Done: c.Done,
		OnStream: c.Streaming,
	}, nil
}

// notRunning turns the manager's answer for a sandbox this agent does not run into E2B's
// "sandbox not found" (502): one it does not know (killed, expired, never here), one being
// killed, or one paused (the control plane resumes paused sandboxes that allow it before it
// routes to them, so traffic for a paused one here came on a route cached elsewhere).
// Transitional states stay busy (409): the sandbox is running or paused in a moment.
func notRunning(id string, err error) error {
	var busy *sandbox.BusyError
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return &proxy.NotFoundError{SandboxID: id, Detail: "sandbox " + id + " is not running on this host: it was killed, its timeout ran out, or it never existed"}
	case errors.As(err, &busy) && (busy.State == sandbox.Stopping || busy.State == sandbox.Stopped):
		return &proxy.NotFoundError{SandboxID: id, Detail: "sandbox " + id + " is being killed"}
	case errors.As(err, &busy) && busy.State == sandbox.Paused:
		return &proxy.NotFoundError{SandboxID: id, Detail: "sandbox " + id + " is paused"}
	}
	return err
}

func proxyStatus(err error) int {
	var busy *sandbox.BusyError
	switch {
	case proxy.IsNotFound(err):
		return proxy.NotFoundStatus
	case errors.As(err, &busy), errors.Is(err, conntrack.ErrDraining):
		return http.StatusConflict
	default:
		return http.StatusBadGateway
	}
}

// rpcError maps manager errors to Connect codes.
func rpcError(err error) error {
	var busy *sandbox.BusyError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sandbox.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.As(err, &busy):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, sandbox.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, sandbox.ErrTemplateMismatch), errors.Is(err, sandbox.ErrNoArtifacts),
		errors.Is(err, artifacts.ErrNotFound), errors.Is(err, artifacts.ErrCorrupt):
		// Not this host's to fix: the control plane says so, and the sandbox stays paused.
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, sandbox.ErrSnapshotNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, sandbox.ErrHostFull):
		return connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, sandbox.ErrForkUnsupported), errors.Is(err, sandbox.ErrSnapshotUnsupported),
		errors.Is(err, sandbox.ErrFilesystemPauseUnsupported):
		return connect.NewError(connect.CodeUnimplemented, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}

func toProto(i sandbox.Info) *pb.Sandbox {
	s := &pb.Sandbox{
		SandboxId:   i.ID,
		Template:    i.Template,
		State:       stateProto[i.State],
		Cpus:        uint32(i.CPUs),
		MemoryMib:   uint32(i.MemoryMiB),
		DiskMib:     uint32(i.DiskMiB),
		EnvdVersion: envd.Version,
		CreatedAt:   timestamppb.New(i.CreatedAt),
		Metadata:    i.Metadata,
		Egress:      egressToProto(i.Egress, i.EgressDomains),

		SnapshotManifest: i.SnapshotManifest,
	}
	if i.EnvdAddr.IsValid() {
		s.EnvdAddress = i.EnvdAddr.String()
	}
	return s
}

var stateProto = map[sandbox.State]pb.State{
	sandbox.Starting: pb.State_STATE_STARTING,
	sandbox.Running:  pb.State_STATE_RUNNING,
	sandbox.Pausing:  pb.State_STATE_PAUSING,
	sandbox.Paused:   pb.State_STATE_PAUSED,
	sandbox.Resuming: pb.State_STATE_RESUMING,
	sandbox.Stopping: pb.State_STATE_STOPPING,
	sandbox.Stopped:  pb.State_STATE_STOPPED,
}

// Create boots a sandbox.
func (a *Agent) Create(ctx context.Context, req *connect.Request[pb.CreateRequest]) (*connect.Response[pb.CreateResponse], error) {
	m := req.Msg
	egress, domains, err := egressFromProto(m.GetEgress())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	info, err := a.mgr.Create(ctx, sandbox.CreateRequest{
		ID: m.GetSandboxId(), Template: m.GetTemplate(), CPUs: int(m.GetCpus()), MemoryMiB: int(m.GetMemoryMib()),
		DiskMiB: int(m.GetDiskMib()),
		EnvVars: m.GetEnvVars(), AccessToken: m.GetEnvdAccessToken(), Metadata: m.GetMetadata(),
		Egress: egress, EgressDomains: domains, SnapshotID: m.GetSnapshotId(),
		TemplateArtifact: m.GetTemplateArtifact(),
	})
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&pb.CreateResponse{Sandbox: toProto(info)}), nil
}

// Get returns one sandbox.
func (a *Agent) Get(ctx context.Context, req *connect.Request[pb.GetRequest]) (*connect.Response[pb.GetResponse], error) {
	info, err := a.mgr.Get(req.Msg.GetSandboxId())
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&pb.GetResponse{Sandbox: toProto(info)}), nil
}

// List returns every sandbox on this host.
func (a *Agent) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	res := &pb.ListResponse{}
	for _, i := range a.mgr.List() {
		res.Sandboxes = append(res.Sandboxes, toProto(i))
	}
	return connect.NewResponse(res), nil
}

// Destroy removes a sandbox.
func (a *Agent) Destroy(ctx context.Context, req *connect.Request[pb.DestroyRequest]) (*connect.Response[pb.DestroyResponse], error) {
	id := req.Msg.GetSandboxId()
	err := a.mgr.Destroy(ctx, id)
	a.proxy.Evict(id)
	if err != nil {
		return nil, rpcError(err)
	}
	a.metrics.Forget(id)
	return connect.NewResponse(&pb.DestroyResponse{}), nil
}

// Pause snapshots a sandbox to disk.
func (a *Agent) Pause(ctx context.Context, req *connect.Request[pb.PauseRequest]) (*connect.Response[pb.PauseResponse], error) {
	id := req.Msg.GetSandboxId()
	start := time.Now()
	pause := a.mgr.Pause
	if req.Msg.GetFilesystemOnly() {
		pause = a.mgr.PauseFilesystem
	}
	info, err := pause(ctx, id)
	if err != nil {
		return nil, rpcError(err)
	}
	a.proxy.Evict(id)
	a.log.Info("sandbox paused", "sandbox", id, "filesystem_only", req.Msg.GetFilesystemOnly(), "took", time.Since(start))
	return connect.NewResponse(&pb.PauseResponse{Sandbox: toProto(info)}), nil
}

// Resume restores a paused sandbox.
func (a *Agent) Resume(ctx context.Context, req *connect.Request[pb.ResumeRequest]) (*connect.Response[pb.ResumeResponse], error) {
	start := time.Now()
	info, err := a.mgr.ResumeFrom(ctx, req.Msg.GetSandboxId(), artifacts.Digest(req.Msg.GetSnapshotManifest()))
	if err != nil {
		return nil, rpcError(err)
	}
	a.log.Info("sandbox resumed", "sandbox", info.ID, "manifest", req.Msg.GetSnapshotManifest(), "took", time.Since(start))
	return connect.NewResponse(&pb.ResumeResponse{Sandbox: toProto(info)}), nil
}

// SetEgress replaces a sandbox's outbound policy.
func (a *Agent) SetEgress(ctx context.Context, req *connect.Request[pb.SetEgressRequest]) (*connect.Response[pb.SetEgressResponse], error) {
	egress, domains, err := egressFromProto(req.Msg.GetEgress())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	info, err := a.mgr.SetEgress(ctx, req.Msg.GetSandboxId(), egress, domains)
	if err != nil {
		return nil, rpcError(err)
	}
	a.log.Info("sandbox egress set", "sandbox", info.ID, "allow", len(egress.Allow), "deny", len(egress.Deny), "domains", len(domains))
	return connect.NewResponse(&pb.SetEgressResponse{Sandbox: toProto(info)}), nil
}

// Fork copies a running sandbox into new ones.
func (a *Agent) Fork(ctx context.Context, req *connect.Request[pb.ForkRequest]) (*connect.Response[pb.ForkResponse], error) {
	var children []sandbox.ForkChild
	for _, c := range req.Msg.GetChildren() {
		children = append(children, sandbox.ForkChild{
			ID: c.GetSandboxId(), AccessToken: c.GetEnvdAccessToken(), EnvVars: c.GetEnvVars(), Metadata: c.GetMetadata(),
		})
	}
	if len(children) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("fork: no children given"))
	}
	infos, errs, err := a.mgr.Fork(ctx, req.Msg.GetSandboxId(), children)
	if err != nil {
		return nil, rpcError(err)
	}
	res := &pb.ForkResponse{}
	for i := range children {
		if errs[i] != nil {
			res.Results = append(res.Results, &pb.ForkResult{Error: errs[i].Error()})
			continue
		}
		res.Results = append(res.Results, &pb.ForkResult{Sandbox: toProto(infos[i])})
	}
	return connect.NewResponse(res), nil
}

// Stats reports capacity and use for placement.
func (a *Agent) Stats(ctx context.Context, req *connect.Request[pb.StatsRequest]) (*connect.Response[pb.StatsResponse], error) {
	res, err := a.Usage()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(res), nil
}

// CommittedCPUs is the sum of the vCPUs of the sandboxes that are not paused.
func (a *Agent) CommittedCPUs() int {
	n := 0
	for _, i := range a.mgr.List() {
		if i.State != sandbox.Paused {
			n += i.CPUs
		}
	}
	return n
}

// Usage is the host's capacity and what its sandboxes use, for Stats and heartbeats.
func (a *Agent) Usage() (*pb.StatsResponse, error) {
	m, err := a.stats.Read()
	if err != nil {
		return nil, fmt.Errorf("read host stats: %w", err)
	}
	res := &pb.StatsResponse{
		Runtime:              a.runtime,
		Cpus:                 uint32(runtime.NumCPU()),
		MemoryTotalBytes:     m.MemTotal,
		MemoryAvailableBytes: m.MemTotal - m.MemUsed,
	}
	for _, i := range a.mgr.List() {
		switch i.State {
		case sandbox.Running, sandbox.Starting, sandbox.Resuming, sandbox.Pausing, sandbox.Forking:
			res.SandboxesRunning++
			res.MemoryCommittedMib += uint64(i.MemoryMiB)
		case sandbox.Paused:
			res.SandboxesPaused++
		}
	}
	return res, nil
}
