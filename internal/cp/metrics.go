package cp

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// sandboxMetrics answers GET /sandboxes/{id}/metrics with the samples of envd's metrics the
// sandbox's agent took (every 5 s while it runs, the last 2 hours, stamped with the host's
// clock) whose time is in the query's [start, end] (Unix seconds, both inclusive; start
// defaults to the sandbox's start and end to now, as on E2B), oldest first. A paused
// sandbox returns the samples of before its pause; one whose agent no longer has it (moved
// to another host, or the agent restarted: the history is in the agent's memory) returns
// what that agent took, possibly nothing.
func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	start, end, err := metricsRange(r.URL.Query())
	if err != nil {
		fail(w, err)
		return
	}
	sb, err := s.store.Sandbox(r.Context(), id)
	if err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	from := sb.StartedAt.Truncate(time.Second)
	if start != nil {
		from = time.Unix(*start, 0)
	}
	req := &pb.MetricsRequest{SandboxId: sb.ID, Start: timestamppb.New(from)}
	if end != nil {
		// Inclusive of the whole second end names.
		req.End = timestamppb.New(time.Unix(*end, 0).Add(time.Second - time.Nanosecond))
	}
	samples, err := s.agentMetrics(r.Context(), sb, req)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]api.SandboxMetric, 0, len(samples))
	for _, m := range samples {
		at := m.GetTime().AsTime().UTC().Truncate(time.Second)
		out = append(out, api.SandboxMetric{
			Timestamp: at, TimestampUnix: at.Unix(), CPUCount: int(m.GetCpuCount()), CPUUsedPct: m.GetCpuUsedPct(),
			MemUsed: m.GetMemUsed(), MemTotal: m.GetMemTotal(), MemCache: m.GetMemCache(),
			DiskUsed: m.GetDiskUsed(), DiskTotal: m.GetDiskTotal(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// agentMetrics asks the sandbox's agent for its samples in the request's range. A host or a
// sandbox the agent does not know has none.
func (s *Server) agentMetrics(ctx context.Context, sb store.Sandbox, req *pb.MetricsRequest) ([]*pb.MetricSample, error) {
	if sb.HostID == "" {
		return nil, nil
	}
	host, err := s.store.Host(ctx, sb.HostID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if host.State != store.HostReady {
		return nil, errorf(http.StatusServiceUnavailable, "metrics of %s: its host %s is %s", sb.ID, host.ID, host.State)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := s.agents.client(host).Metrics(ctx, connect.NewRequest(req))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			return nil, nil
		}
		return nil, errorf(http.StatusBadGateway, "metrics of %s from host %s: %v", sb.ID, host.ID, err)
	}
	return res.Msg.GetSamples(), nil
}

// metricsRange parses the start and end of a metrics query: Unix seconds, nil when absent.
func metricsRange(q url.Values) (start, end *int64, err error) {
	parse := func(name string) (*int64, error) {
		v := q.Get(name)
		if v == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, errorf(http.StatusBadRequest, "%s must be a Unix time in seconds (an integer, 0 or more), got %q", name, v)
		}
		return &n, nil
	}
	if start, err = parse("start"); err != nil {
		return nil, nil, err
	}
	if end, err = parse("end"); err != nil {
		return nil, nil, err
	}
	if start != nil && end != nil && *start > *end {
		return nil, nil, errorf(http.StatusBadRequest, "start (%d) is after end (%d)", *start, *end)
	}
	return start, end, nil
}
