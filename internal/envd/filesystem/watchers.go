package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// maxPolledEvents bounds a polled watcher's buffer so a client that stops polling cannot
// make envd grow without limit; beyond it the oldest events are dropped.
const maxPolledEvents = 4096

// maxPolledWatchers bounds how many polled watchers a sandbox holds at once. Each is an
// inotify instance; Linux allows 128 per user by default (gVisor has no such limit), and
// streamed WatchDir calls need some of them too.
const maxPolledWatchers = 100

// watcherIdleTimeout is how long a polled watcher lives without being polled. Clients that
// die without RemoveWatcher would otherwise leave their watchers running for the sandbox's
// whole life; idle ones are removed whenever a watcher is created.
var watcherIdleTimeout = 10 * time.Minute

// polledWatcher buffers a watch's events until GetWatcherEvents collects them.
type polledWatcher struct {
	w *dirWatcher

	mu       sync.Mutex
	events   []*rpc.FilesystemEvent
	dropped  int
	lastPoll time.Time
}

func (p *polledWatcher) push(ev *rpc.FilesystemEvent) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.events) >= maxPolledEvents {
		p.events = p.events[1:]
		p.dropped++
	}
	p.events = append(p.events, ev)
	return true
}

// take returns the buffered events and empties the buffer.
func (p *polledWatcher) take() ([]*rpc.FilesystemEvent, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	evs, dropped := p.events, p.dropped
	p.events, p.dropped = nil, 0
	p.lastPoll = time.Now()
	return evs, dropped
}

func (p *polledWatcher) idle(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Sub(p.lastPoll) > watcherIdleTimeout
}

func (p *polledWatcher) close() { p.w.close() }

// CreateWatcher starts a watch whose events are collected by polling GetWatcherEvents, for
// clients that cannot hold a stream open.
func (s *Service) CreateWatcher(_ context.Context, req *connect.Request[rpc.CreateWatcherRequest]) (*connect.Response[rpc.CreateWatcherResponse], error) {
	u, err := s.caller(req)
	if err != nil {
		return nil, err
	}
	root, err := s.resolve(req.Msg.GetPath(), "path", u)
	if err != nil {
		return nil, err
	}
	s.expireIdleWatchers()
	s.mu.Lock()
	n := len(s.watchers)
	s.mu.Unlock()
	if n >= maxPolledWatchers {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d watchers are open, the most a sandbox may have: remove some with RemoveWatcher", n))
	}
	pw := &polledWatcher{lastPoll: time.Now()}
	spec := watchSpec{root: root, recursive: req.Msg.GetRecursive(), includeEntry: req.Msg.GetIncludeEntry(), user: u}
	w, err := startWatch(spec, req.Msg.GetAllowNetworkMounts(), s.logger, pw.push)
	if err != nil {
		return nil, err
	}
	pw.w = w
	id, err := newWatcherID()
	if err != nil {
		w.close()
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	s.mu.Lock()
	s.watchers[id] = pw
	s.mu.Unlock()
	return connect.NewResponse(&rpc.CreateWatcherResponse{WatcherId: id}), nil
}

// GetWatcherEvents returns the events buffered since the last call and clears them. A watcher
// whose directory was removed keeps returning its remaining events until it is removed.
func (s *Service) GetWatcherEvents(_ context.Context, req *connect.Request[rpc.GetWatcherEventsRequest]) (*connect.Response[rpc.GetWatcherEventsResponse], error) {
	pw, err := s.watcher(req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	events, dropped := pw.take()
	if dropped > 0 {
		s.logger.Warn("polled watcher dropped its oldest events: poll more often", "watcher", req.Msg.GetWatcherId(), "dropped", dropped)
	}
	return connect.NewResponse(&rpc.GetWatcherEventsResponse{Events: events}), nil
}

// RemoveWatcher stops a watcher and forgets its events.
func (s *Service) RemoveWatcher(_ context.Context, req *connect.Request[rpc.RemoveWatcherRequest]) (*connect.Response[rpc.RemoveWatcherResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	pw, ok := s.watchers[id]
	delete(s.watchers, id)
	s.mu.Unlock()
	if !ok {
		return nil, unknownWatcher(id)
	}
	pw.close()
	return connect.NewResponse(&rpc.RemoveWatcherResponse{}), nil
}

// expireIdleWatchers removes the polled watchers nobody has polled for watcherIdleTimeout.
func (s *Service) expireIdleWatchers() {
	now := time.Now()
	var idle []*polledWatcher
	s.mu.Lock()
	for id, pw := range s.watchers {
		if pw.idle(now) {
			idle = append(idle, pw)
			delete(s.watchers, id)
			s.logger.Info("removed a polled watcher nobody polled", "watcher", id, "idle_for_more_than", watcherIdleTimeout)
		}
	}
	s.mu.Unlock()
	for _, pw := range idle {
		pw.close()
	}
}

func (s *Service) watcher(id string) (*polledWatcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pw, ok := s.watchers[id]
	if !ok {
		return nil, unknownWatcher(id)
	}
	return pw, nil
}

func unknownWatcher(id string) error {
	if id == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("watcher_id is empty: pass the id CreateWatcher returned"))
	}
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("no watcher %q: it was removed, never created, or not polled for %v", id, watcherIdleTimeout))
}

func newWatcherID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate watcher id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
