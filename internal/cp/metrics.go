package cp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/hoststats"
	"github.com/hearthsh/hearth/internal/hostreg"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
)

// sandboxMetrics answers GET /sandboxes/{id}/metrics with a sample read from envd now, if
// it falls inside the query's [start, end] (Unix seconds, both inclusive; start defaults to
// the sandbox's start and end to now, as on E2B). Hearth keeps no metrics history, so the
// list has one element for a running sandbox and a range that reaches the present, and none
// otherwise (a paused sandbox, a range that ended before now).
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
	if start == nil {
		t := sb.StartedAt.Unix()
		start = &t
	}
	// A sample read now is newer than an end in the past: do not ask envd for it.
	if sb.State != store.StateRunning || (end != nil && *end < time.Now().Unix()) {
		writeJSON(w, http.StatusOK, []SandboxMetric{})
		return
	}
	m, err := s.readEnvdMetrics(r.Context(), sb)
	if err != nil {
		fail(w, err)
		return
	}
	// The sample is stamped with the control plane's clock, not the one envd reports: the
	// guest's clock is the sandbox's to set, and it must not move a sample into or out of a
	// range.
	at := time.Now().UTC().Truncate(time.Second)
	if at.Unix() < *start || (end != nil && at.Unix() > *end) {
		writeJSON(w, http.StatusOK, []SandboxMetric{})
		return
	}
	writeJSON(w, http.StatusOK, []SandboxMetric{{
		Timestamp: at, TimestampUnix: at.Unix(), CPUCount: m.CPUCount, CPUUsedPct: m.CPUUsedPct,
		MemUsed: m.MemUsed, MemTotal: m.MemTotal, MemCache: m.MemCache, DiskUsed: m.DiskUsed, DiskTotal: m.DiskTotal,
	}})
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

// readEnvdMetrics asks envd through the sandbox's agent proxy.
func (s *Server) readEnvdMetrics(ctx context.Context, sb store.Sandbox) (hoststats.Metrics, error) {
	var m hoststats.Metrics
	host, err := s.store.Host(ctx, sb.HostID)
	if err != nil {
		return m, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host.ProxyAddr+"/metrics", nil)
	if err != nil {
		return m, err
	}
	req.Header.Set(proxy.HeaderSandboxID, sb.ID)
	req.Header.Set(proxy.HeaderSandboxPort, itoa(proxy.EnvdPort))
	req.Header.Set(hostreg.ProxyAuthHeader, s.cfg.AgentToken)
	if sb.EnvdAccessToken != "" {
		req.Header.Set(auth.Header, sb.EnvdAccessToken)
	}
	res, err := s.metricsClient.Do(req)
	if err != nil {
		return m, fmt.Errorf("read metrics of %s: %w", sb.ID, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return m, fmt.Errorf("read metrics of %s: envd answered %s", sb.ID, res.Status)
	}
	// The answer comes from inside the sandbox: read a bounded amount of it.
	body, err := io.ReadAll(io.LimitReader(res.Body, maxEnvdMetrics+1))
	if err != nil {
		return m, fmt.Errorf("read metrics of %s: %w", sb.ID, err)
	}
	if len(body) > maxEnvdMetrics {
		return m, errorf(http.StatusBadGateway, "read metrics of %s: envd's answer is over %d bytes", sb.ID, maxEnvdMetrics)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, errorf(http.StatusBadGateway, "read metrics of %s: envd's answer: %v", sb.ID, err)
	}
	return m, nil
}

// maxEnvdMetrics caps envd's metrics answer (a few hundred bytes in practice).
const maxEnvdMetrics = 64 << 10
