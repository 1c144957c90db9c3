package uffd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// deferTimeout bounds how long a fault may keep failing with EAGAIN. The kernel answers
// EAGAIN only while an event about the address space is pending, and we read events as
// they come, so a fault still stuck after this long means the session is broken.
const deferTimeout = 30 * time.Second

// retryInterval is how soon deferred faults are retried when nothing else wakes the loop.
const retryInterval = time.Millisecond

// errGone reports that the address space behind a userfaultfd no longer exists (ESRCH):
// its process exited. It ends a session without being a failure.
var errGone = errors.New("address space gone")

// target is one userfaultfd and the address space it serves: the client's own, or that of
// a child the client forked (UFFD_EVENT_FORK hands over a new userfaultfd for it).
type target struct {
	fd    int
	spans spanTable
	child bool
}

// pendingFault is a fault the kernel refused to fill with EAGAIN. The kernel does not send
// it again, so the session retries it after reading the events that explain the refusal.
type pendingFault struct {
	t     *target
	addr  uint64
	since time.Time
}

// session serves one client: a poll loop over its userfaultfds, its pidfd (to notice its
// exit) and an eventfd that context cancellation writes to.
type session struct {
	srv     *Server
	log     *slog.Logger
	peer    peer
	wakeFD  int
	targets []*target // targets[0] is the client's own userfaultfd
	pending []pendingFault
	zero    zeroSource
	buf     []byte
}

func newSession(srv *Server, p peer, log *slog.Logger) *session {
	return &session{srv: srv, log: log, peer: p, wakeFD: -1, buf: make([]byte, 64*msgSize)}
}

// init takes ownership of the client's userfaultfd and checks its regions against the file.
func (s *session) init(hs handshake) error {
	s.targets = []*target{{fd: hs.uffd, spans: newSpanTable(hs.regions)}}
	for i, r := range hs.regions {
		if r.Offset+r.Size > s.srv.mem.size() {
			return fmt.Errorf("region %d (offset %#x, size %#x) runs past the end of the %d-byte memory file",
				i, r.Offset, r.Size, s.srv.mem.size())
		}
	}
	// userfaultfd's poll only works on a non-blocking descriptor. The flag lives on the
	// open file description, which the client shares; Firecracker opens it non-blocking too.
	if err := unix.SetNonblock(hs.uffd, true); err != nil {
		return fmt.Errorf("set userfaultfd non-blocking: %w", err)
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	s.wakeFD = fd
	s.log.Info("uffd session started", "regions", len(hs.regions), "bytes", s.targets[0].spans.size(),
		"pidfd", s.peer.pidfd >= 0)
	return nil
}

func (s *session) close() {
	for _, t := range s.targets {
		_ = unix.Close(t.fd)
	}
	s.targets = nil
	if s.wakeFD >= 0 {
		_ = unix.Close(s.wakeFD)
	}
	s.zero.close()
}

// run serves the client until it exits, unmaps everything, ctx ends, or a fatal error.
func (s *session) run(ctx context.Context) error {
	// Cancellation wakes poll through the eventfd. If the write has started, wait for it
	// before returning, so it cannot land on a reused descriptor number after close.
	var waking sync.WaitGroup
	waking.Add(1)
	stop := context.AfterFunc(ctx, func() {
		defer waking.Done()
		var one = [8]byte{1}
		_, _ = unix.Write(s.wakeFD, one[:])
	})
	defer func() {
		if !stop() {
			waking.Wait()
		}
	}()
	start := time.Now()
	for {
		reason, err := s.step()
		if err != nil {
			return err
		}
		if reason != "" {
			st := s.srv.Stats()
			s.log.Info("uffd session ended", "reason", reason, "duration", time.Since(start),
				"faults_total", st.Faults, "copied_bytes_total", st.CopiedBytes)
			return nil
		}
	}
}

// step waits for one round of readiness and handles it. It returns a non-empty reason
// when the session is over.
func (s *session) step() (string, error) {
	fds := make([]unix.PollFd, 0, 2+len(s.targets))
	fds = append(fds, unix.PollFd{Fd: int32(s.wakeFD), Events: unix.POLLIN})
	if s.peer.pidfd >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(s.peer.pidfd), Events: unix.POLLIN})
	}
	first := len(fds)
	targets := append([]*target(nil), s.targets...)
	for _, t := range targets {
		fds = append(fds, unix.PollFd{Fd: int32(t.fd), Events: unix.POLLIN})
	}
	timeout := -1
	if len(s.pending) > 0 {
		timeout = int(retryInterval / time.Millisecond)
	}
	if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
		return "", fmt.Errorf("poll: %w", err)
	}
	if fds[0].Revents != 0 {
		return "context done", nil
	}
	if s.peer.pidfd >= 0 && fds[1].Revents != 0 {
		return "peer exited", nil
	}
	for i, t := range targets {
		ev := fds[first+i].Revents
		if ev == 0 || !s.serving(t) {
			continue
		}
		var err error
		if ev&unix.POLLIN != 0 {
			err = s.drain(t)
		} else {
			err = fmt.Errorf("userfaultfd poll events %#x", ev)
		}
		if done, err := s.settle(t, err); done != "" || err != nil {
			return done, err
		}
	}
	if done, err := s.retryPending(); done != "" || err != nil {
		return done, err
	}
	if len(s.targets[0].spans) == 0 {
		return "client unmapped all its memory", nil
	}
	return "", nil
}

// settle decides what an error on a target means: for the client's own userfaultfd, ESRCH
// ends the session and anything else is fatal; a child's userfaultfd is just dropped.
func (s *session) settle(t *target, err error) (string, error) {
	if err == nil {
		return "", nil
	}
	if !t.child {
		if errors.Is(err, errGone) {
			return "peer address space gone", nil
		}
		return "", err
	}
	// A child we cannot serve any more loses its registration when we close its
	// userfaultfd: its missing pages then read as zeros, but it never hangs.
	if errors.Is(err, errGone) {
		s.log.Debug("uffd child exited; its userfaultfd is closed", "fd", t.fd)
	} else {
		s.log.Warn("uffd child userfaultfd dropped", "fd", t.fd, "err", err)
	}
	s.dropTarget(t)
	return "", nil
}

func (s *session) dropTarget(t *target) {
	for i, x := range s.targets {
		if x == t {
			s.targets = append(s.targets[:i], s.targets[i+1:]...)
			break
		}
	}
	kept := s.pending[:0]
	for _, p := range s.pending {
		if p.t != t {
			kept = append(kept, p)
		}
	}
	s.pending = kept
	_ = unix.Close(t.fd)
}

// drain reads every message queued on t, in order, and handles each.
func (s *session) drain(t *target) error {
	for {
		n, err := unix.Read(t.fd, s.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("read userfaultfd: %w", err)
		case n%msgSize != 0:
			return fmt.Errorf("read userfaultfd: %d bytes is not a whole number of messages", n)
		case n == 0:
			return nil
		}
		for off := 0; off < n; off += msgSize {
			if err := s.handle(t, decodeMsg(s.buf[off:off+msgSize])); err != nil {
				return err
			}
		}
	}
}

// handle applies one message. Events change the span table before later faults are
// served, which is what makes removed ranges read as zeros and moved ranges follow.
func (s *session) handle(t *target, m msg) error {
	c := &s.srv.stats
	switch m.Event {
	case eventPagefault:
		c.faults.Add(1)
		if m.Flags&(pagefaultFlagWP|pagefaultFlagMinor) != 0 {
			return fmt.Errorf("fault at %#x has flags %#x: only missing-page faults can be served", m.Address, m.Flags)
		}
		return s.fault(t, m.Address, time.Now())
	case eventRemove:
		c.removes.Add(1)
		s.log.Debug("uffd remove", "start", m.Start, "end", m.End, "child", t.child)
		t.spans.zero(m.Start, m.End)
	case eventUnmap:
		c.unmaps.Add(1)
		s.log.Debug("uffd unmap", "start", m.Start, "end", m.End, "child", t.child)
		t.spans.drop(m.Start, m.End)
	case eventRemap:
		c.remaps.Add(1)
		s.log.Debug("uffd remap", "from", m.From, "to", m.To, "len", m.Len, "child", t.child)
		t.spans.move(m.From, m.To, m.Len)
	case eventFork:
		c.forks.Add(1)
		return s.adopt(t, m.UFD)
	default:
		s.log.Warn("uffd unknown event ignored", "event", m.Event)
	}
	return nil
}

// adopt serves the userfaultfd of a child the client forked. The child starts with the
// parent's address space, so it gets a copy of the parent's span table: pages the parent
// had are already in the child, the rest fault to us and come from the file (or zeros).
// Serving it, rather than closing it, matters: closing would make the child's missing
// pages silently read as zeros instead of guest memory.
func (s *session) adopt(parent *target, fd int) error {
	if fd < 0 {
		return fmt.Errorf("fork event with invalid userfaultfd %d", fd)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("set child userfaultfd non-blocking: %w", err)
	}
	s.targets = append(s.targets, &target{fd: fd, spans: parent.spans.clone(), child: true})
	s.log.Debug("uffd fork: serving child userfaultfd", "fd", fd)
	return nil
}

// fault serves one fault, queueing it for a retry if the kernel answers EAGAIN.
func (s *session) fault(t *target, addr uint64, since time.Time) error {
	retry, err := s.serveFault(t, addr)
	if err != nil {
		return err
	}
	if retry {
		if time.Since(since) > deferTimeout {
			return fmt.Errorf("fault at %#x still refused with EAGAIN after %v", addr, deferTimeout)
		}
		s.srv.stats.retries.Add(1)
		s.pending = append(s.pending, pendingFault{t: t, addr: addr, since: since})
	}
	return nil
}

// retryPending retries the faults deferred by EAGAIN against the current span tables.
// Its results mean the same as step's.
func (s *session) retryPending() (string, error) {
	queue := s.pending
	s.pending = nil
	for _, p := range queue {
		if !s.serving(p.t) {
			continue // its child userfaultfd was dropped meanwhile
		}
		if err := s.fault(p.t, p.addr, p.since); err != nil {
			if done, err := s.settle(p.t, err); done != "" || err != nil {
				return done, err
			}
		}
	}
	return "", nil
}

func (s *session) serving(t *target) bool {
	for _, x := range s.targets {
		if x == t {
			return true
		}
	}
	return false
}
