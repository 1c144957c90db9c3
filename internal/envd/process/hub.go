package process

import (
	"errors"
	"sync"
	"time"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// subscriberBuffer is the number of events buffered per output stream, as in DESIGN.md.
const subscriberBuffer = 256

// errSlowConsumer ends a stream whose client stopped reading for longer than the stall limit.
var errSlowConsumer = errors.New("client stopped reading the output stream; reconnect with Connect to follow the process again")

// hub fans a process's events out to its streams. Each stream has its own buffer. A stream
// that is full makes the publisher wait, so a client that reads slower than the process writes
// slows the process down instead of losing output; a stream that stays full past stall is cut
// off, so a client that stopped reading cannot block the process or the other streams for
// longer than that.
type hub struct {
	stall time.Duration

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	end  *pb.ProcessEvent_EndEvent // set once the process has ended and its output is drained
}

type subscriber struct {
	events chan *pb.ProcessEvent
	// gone is closed when the stream goes away or is cut off; err says why it was cut off.
	gone     chan struct{}
	goneOnce sync.Once
	err      error
}

func newHub(stall time.Duration) *hub {
	return &hub{stall: stall, subs: map[*subscriber]struct{}{}}
}

// subscribe adds a stream. If the process already ended, the returned end is non-nil and the
// subscriber receives nothing.
func (h *hub) subscribe() (*subscriber, *pb.ProcessEvent_EndEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &subscriber{events: make(chan *pb.ProcessEvent, subscriberBuffer), gone: make(chan struct{})}
	if h.end != nil {
		return s, h.end
	}
	h.subs[s] = struct{}{}
	return s, nil
}

// unsubscribe removes a stream whose client went away.
func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	s.close(nil)
}

func (s *subscriber) close(err error) {
	s.goneOnce.Do(func() {
		s.err = err
		close(s.gone)
	})
}

// publish delivers an event to every stream, waiting up to the stall limit for each full one.
func (h *hub) publish(ev *pb.ProcessEvent) {
	h.mu.Lock()
	subs := make([]*subscriber, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()

	for _, s := range subs {
		h.deliver(s, ev)
	}
}

func (h *hub) deliver(s *subscriber, ev *pb.ProcessEvent) {
	select {
	case s.events <- ev:
		return
	case <-s.gone:
		return
	default:
	}
	timer := time.NewTimer(h.stall)
	defer timer.Stop()
	select {
	case s.events <- ev:
	case <-s.gone:
	case <-timer.C:
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		s.close(errSlowConsumer)
	}
}

// finish records the end event and closes every stream's event channel after it.
func (h *hub) finish(end *pb.ProcessEvent_EndEvent) {
	h.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: end}})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.end = end
	for s := range h.subs {
		close(s.events)
	}
	h.subs = map[*subscriber]struct{}{}
}
