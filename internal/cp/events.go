package cp

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// eventLog keeps the recent lifecycle events of each sandbox (created, paused, resumed,
// killed and why) for GET /sandboxes/{id}/logs. It is in memory: a control plane restart
// starts it afresh.
type eventLog struct {
	mu     sync.Mutex
	events map[string][]api.SandboxLog
	// owners is each logged sandbox's team, so that its logs stay its team's after the
	// sandbox record is gone.
	owners map[string]string
}

const (
	maxEventsPerSandbox = 200
	maxSandboxesLogged  = 10000
)

func newEventLog() *eventLog {
	return &eventLog{events: map[string][]api.SandboxLog{}, owners: map[string]string{}}
}

// own records the team of a sandbox about to be logged.
func (l *eventLog) own(id, team string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.owners[id] = team
	if len(l.owners) > 2*maxSandboxesLogged {
		for k := range l.owners {
			if _, ok := l.events[k]; !ok && k != id {
				delete(l.owners, k)
			}
		}
	}
}

// ownerOf is the team recorded for a sandbox, or "".
func (l *eventLog) ownerOf(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owners[id]
}

func (l *eventLog) add(id, level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := api.SandboxLog{Timestamp: time.Now().UTC(), Line: msg, Level: level, Message: msg}
	evs := append(l.events[id], ev)
	if len(evs) > maxEventsPerSandbox {
		evs = evs[len(evs)-maxEventsPerSandbox:]
	}
	l.events[id] = evs
	if len(l.events) > maxSandboxesLogged {
		// Forget sandboxes that have been quiet for an hour (killed long ago, mostly).
		for k, v := range l.events {
			if time.Since(v[len(v)-1].Timestamp) > time.Hour {
				delete(l.events, k)
				delete(l.owners, k)
			}
		}
	}
}

func (l *eventLog) since(id string, from time.Time, limit int) []api.SandboxLog {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []api.SandboxLog{}
	for _, ev := range l.events[id] {
		if !ev.Timestamp.Before(from) && len(out) < limit {
			out = append(out, ev)
		}
	}
	return out
}

func (s *Server) sandboxLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	var from time.Time
	for _, k := range []string{"start", "cursor"} {
		if v := q.Get(k); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, k+" must be a Unix time in milliseconds")
				return
			}
			from = time.UnixMilli(ms)
		}
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be 1 to 1000")
			return
		}
		limit = n
	}
	if _, err := s.store.Sandbox(r.Context(), id); err != nil {
		// A killed sandbox's events stay readable until they age out.
		if len(s.events.since(id, time.Time{}, 1)) == 0 {
			fail(w, sandboxErr(id, err))
			return
		}
	}
	evs := s.events.since(id, from, limit)
	writeJSON(w, http.StatusOK, api.SandboxLogs{Logs: evs, LogEntries: evs})
}
