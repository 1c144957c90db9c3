package cp

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/hearthsh/hearth/internal/store"
)

// counters are what this replica did, for GET /metrics. Each replica counts only its own
// actions: with several replicas, sum the series over them (every timeout is acted on by
// exactly one replica, so the sum counts each once).
type counters struct {
	// timeoutPaused and timeoutKilled count the timeouts this replica acted on.
	timeoutPaused, timeoutKilled atomic.Int64
	// hostsDown counts the hosts this replica marked down (one replica wins each).
	hostsDown atomic.Int64
}

// expired is the number of timeouts this replica acted on, either way.
func (c *counters) expired() int64 { return c.timeoutPaused.Load() + c.timeoutKilled.Load() }

// serveMetrics answers GET /metrics (Hearth-only) in Prometheus' text format. The figures are
// the operator's, like the host list.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if teamOf(r.Context()) != store.DefaultTeam {
		writeError(w, http.StatusForbidden, "metrics are shown to the operator's team (\"default\") only")
		return
	}
	var b strings.Builder
	counter := func(name, help string, series ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		for _, s := range series {
			b.WriteString(name + s + "\n")
		}
	}
	counter("hearth_sandbox_timeouts_total", "Sandbox timeouts this control plane replica acted on, by what it did (sum over replicas: each timeout is acted on once).",
		fmt.Sprintf(`{action="paused"} %d`, s.counts.timeoutPaused.Load()),
		fmt.Sprintf(`{action="killed"} %d`, s.counts.timeoutKilled.Load()))
	counter("hearth_hosts_marked_down_total", "Hosts this control plane replica marked down for missing heartbeats.",
		fmt.Sprintf(" %d", s.counts.hostsDown.Load()))
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write([]byte(b.String()))
}
