package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// Call is one request the server received, in arrival order.
type Call struct {
	Method, Path string
	// Route is the contract's key for the call, e.g. "PUT /drives/{id}".
	Route string
	Body  json.RawMessage `json:",omitempty"`
	// Status is what the server answered; Fault the fault_message of a 400.
	Status int
	Fault  string
}

// GuestUsedMiB is the memory the fake guest reports in use (not free) in its balloon
// statistics, besides the balloon.
const GuestUsedMiB = 64

// Server is a fake Firecracker API on a Unix socket.
type Server struct {
	// OnSnapshotCreate, if set, runs for a valid snapshot/create of a paused VM before the
	// server answers, with the device state a real snapshot would hold; an error becomes a
	// 400. Set before the first call.
	OnSnapshotCreate func(api.SnapshotCreate, State) error
	// OnSnapshotLoad, likewise, for a valid snapshot/load on a fresh VM; it returns the
	// device state the snapshot held, which the server takes over.
	OnSnapshotLoad func(api.SnapshotLoad) (State, error)
	// OnCall, if set, sees every call after it was answered (with the server's lock held:
	// it must not call back into the server).
	OnCall func(Call)

	socket string
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}

	mu       sync.Mutex
	calls    []Call
	failures map[string]string
	vm       vmState
}

// State is the part of the VM's configuration a snapshot carries over to the restored VM.
type State struct {
	MemMiB  int          `json:"mem_mib"`
	Balloon *api.Balloon `json:"balloon,omitempty"`
}

// vmState is what the server remembers of the VM to refuse what Firecracker refuses.
type vmState struct {
	configured bool // anything but metrics set: snapshot/load is no longer allowed
	booted     bool // started or loaded: pre-boot calls are refused
	paused     bool
	kernel     bool
	memMiB     int
	balloon    *api.Balloon
}

// New listens on socketPath and serves until Close.
func New(socketPath string) (*Server, error) {
	if _, err := theContract(); err != nil {
		return nil, fmt.Errorf("apitest: load contract: %w", err)
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("apitest: %w", err)
	}
	s := &Server{socket: socketPath, ln: ln, done: make(chan struct{}), failures: map[string]string{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// SocketPath is where the server listens.
func (s *Server) SocketPath() string { return s.socket }

// Close stops the server and removes its socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	_ = os.Remove(s.socket)
	return err
}

// Fail makes every later call to route (e.g. "PUT /snapshot/create") answer 400 with
// fault; an empty fault clears it.
func (s *Server) Fail(route, fault string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fault == "" {
		delete(s.failures, route)
		return
	}
	s.failures[route] = fault
}

// Calls returns the calls received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Routes returns the route of every call received so far, in order.
func (s *Server) Routes() []string {
	var out []string
	for _, c := range s.Calls() {
		out = append(out, c.Route)
	}
	return out
}

// Paused reports whether the VM's vCPUs are paused.
func (s *Server) Paused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vm.paused
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Call{Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		c.Body = json.RawMessage(body)
	}
	c.Route = Route(r.Method, r.URL.Path)
	status, answer, fault := s.handle(c, r)
	c.Status, c.Fault = status, fault
	s.calls = append(s.calls, c)
	if s.OnCall != nil {
		s.OnCall(c)
	}
	switch {
	case fault != "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": fault})
	case answer != nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(answer)
	default:
		w.WriteHeader(status)
	}
}

// handle checks one call and applies it; it returns the status and either an answer body
// or a fault message.
func (s *Server) handle(c Call, r *http.Request) (int, any, string) {
	bad := func(format string, a ...any) (int, any, string) {
		return http.StatusBadRequest, nil, fmt.Sprintf(format, a...)
	}
	if c.Route == "" {
		return bad("Invalid request method and/or path: %s %s.", c.Method, c.Path)
	}
	if len(c.Body) > 0 && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return bad("request body is not declared as application/json")
	}
	if err := Validate(c.Route, c.Body); err != nil {
		return bad("An error occurred when deserializing the json body of a request: %v", err)
	}
	if f, ok := s.failures[c.Route]; ok {
		return bad("%s", f)
	}
	preBoot := func() (int, any, string) {
		if s.vm.booted {
			return bad("The requested operation is not supported after starting the microVM.")
		}
		s.vm.configured = true
		return http.StatusNoContent, nil, ""
	}
	switch c.Route {
	case "PUT /machine-config":
		var m api.MachineConfig
		_ = json.Unmarshal(c.Body, &m)
		st, a, f := preBoot()
		if f == "" {
			s.vm.memMiB = m.MemSizeMiB
		}
		return st, a, f
	case "PUT /network-interfaces/{id}", "PUT /mmds/config", "PUT /entropy":
		if c.Route == "PUT /network-interfaces/{id}" && !idMatches(c, "iface_id") {
			return bad("The id from the path does not match the id from the body!")
		}
		return preBoot()
	case "PUT /drives/{id}":
		if !idMatches(c, "drive_id") {
			return bad("The id from the path does not match the id from the body!")
		}
		return preBoot()
	case "PUT /boot-source":
		st, a, f := preBoot()
		if f == "" {
			s.vm.kernel = true
		}
		return st, a, f
	case "PUT /balloon":
		var b api.Balloon
		_ = json.Unmarshal(c.Body, &b)
		st, a, f := preBoot()
		if f == "" {
			s.vm.balloon = &b
		}
		return st, a, f
	case "PUT /metrics", "PUT /mmds":
		return http.StatusNoContent, nil, ""
	case "PUT /actions":
		var a api.Action
		_ = json.Unmarshal(c.Body, &a)
		if a.ActionType != api.ActionInstanceStart {
			return http.StatusNoContent, nil, ""
		}
		if s.vm.booted {
			return bad("The requested operation is not supported after starting the microVM.")
		}
		if !s.vm.kernel {
			return bad("Cannot start microvm without kernel configuration.")
		}
		s.vm.booted = true
		return http.StatusNoContent, nil, ""
	case "PATCH /vm":
		var v api.VM
		_ = json.Unmarshal(c.Body, &v)
		if !s.vm.booted {
			return bad("The requested operation is not supported before starting the microVM.")
		}
		s.vm.paused = v.State == api.StatePaused
		return http.StatusNoContent, nil, ""
	case "PATCH /balloon", "GET /balloon":
		if s.vm.balloon == nil {
			return bad("Device not found: balloon")
		}
		if c.Method == http.MethodGet {
			return http.StatusOK, *s.vm.balloon, ""
		}
		var u api.BalloonUpdate
		_ = json.Unmarshal(c.Body, &u)
		s.vm.balloon.AmountMiB = u.AmountMiB
		return http.StatusNoContent, nil, ""
	case "GET /balloon/statistics", "PATCH /balloon/statistics":
		if s.vm.balloon == nil || s.vm.balloon.StatsPollingIntervalS == 0 {
			return bad("Statistics for the balloon device are not enabled")
		}
		if c.Method == http.MethodPatch {
			var u api.BalloonStatsUpdate
			_ = json.Unmarshal(c.Body, &u)
			if u.StatsPollingIntervalS == 0 {
				return bad("Cannot disable statistics after boot")
			}
			s.vm.balloon.StatsPollingIntervalS = u.StatsPollingIntervalS
			return http.StatusNoContent, nil, ""
		}
		// The fake guest uses guestUsedMiB, inflates instantly and reports the rest free.
		n := int64(s.vm.balloon.AmountMiB)
		st := api.BalloonStats{TargetMiB: n, ActualMiB: n, TargetPages: n * 256, ActualPages: n * 256}
		if s.vm.memMiB > 0 {
			st.TotalMemory = int64(s.vm.memMiB) << 20
			st.FreeMemory = max(int64(s.vm.memMiB)-GuestUsedMiB-n, 0) << 20
		}
		return http.StatusOK, st, ""
	case "PUT /snapshot/create":
		if !s.vm.paused {
			return bad("Cannot create a snapshot of a microVM that is not paused.")
		}
		var p api.SnapshotCreate
		_ = json.Unmarshal(c.Body, &p)
		if s.OnSnapshotCreate != nil {
			if err := s.OnSnapshotCreate(p, State{MemMiB: s.vm.memMiB, Balloon: s.vm.balloon}); err != nil {
				return bad("Cannot create snapshot: %v", err)
			}
		}
		return http.StatusNoContent, nil, ""
	case "PUT /snapshot/load":
		if s.vm.configured || s.vm.booted {
			return bad("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
		}
		var p api.SnapshotLoad
		_ = json.Unmarshal(c.Body, &p)
		if s.OnSnapshotLoad != nil {
			st, err := s.OnSnapshotLoad(p)
			if err != nil {
				return bad("Cannot load snapshot: %v", err)
			}
			s.vm.memMiB, s.vm.balloon = st.MemMiB, st.Balloon
		}
		s.vm.booted, s.vm.paused = true, !p.ResumeVM
		return http.StatusNoContent, nil, ""
	}
	return bad("Invalid request method and/or path: %s %s.", c.Method, c.Path)
}

// idMatches reports whether the last path segment equals the body's field.
func idMatches(c Call, field string) bool {
	var m map[string]any
	if err := json.Unmarshal(c.Body, &m); err != nil {
		return false
	}
	id, _ := m[field].(string)
	return id != "" && strings.HasSuffix(c.Path, "/"+id)
}
