// Package process implements envd's process.Process Connect service: starting commands and
// PTYs as a sandbox user, streaming their output, and reattaching to them later.
//
// Processes outlive the request that started them: a client that disconnects can Connect
// again by pid or tag. The Start request's Connect-Timeout-Ms deadline, when set, bounds the
// process's lifetime, as in E2B's envd.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

const (
	// keepaliveHeader is the SDK's request for keepalive events, in seconds.
	keepaliveHeader  = "Keepalive-Ping-Interval"
	defaultKeepalive = 90 * time.Second
	// endedRetention is how long an exited process stays reachable by Connect.
	endedRetention = 10 * time.Minute
	maxEnded       = 1024
	defaultPath    = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Options tune the service; zero values take defaults.
type Options struct {
	// Reap makes envd reap every child, as it must when it runs as PID 1.
	Reap bool
	// StallTimeout is how long a stream may stay full before it is cut off (default 10 s).
	StallTimeout time.Duration
}

// Service implements processconnect.ProcessHandler.
type Service struct {
	env     *sandboxenv.Env
	log     *slog.Logger
	starter starter
	stall   time.Duration

	mu      sync.Mutex
	running map[uint32]*proc
	tags    map[string]*proc
	ended   []*proc // oldest first
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// New returns the process service.
func New(env *sandboxenv.Env, log *slog.Logger, opts Options) *Service {
	s := &Service{
		env:     env,
		log:     log,
		starter: childWaiter{},
		stall:   opts.StallTimeout,
		running: map[uint32]*proc{},
		tags:    map[string]*proc{},
	}
	if s.stall <= 0 {
		s.stall = 10 * time.Second
	}
	if opts.Reap {
		s.starter = newReaper()
	}
	return s
}

// Start runs a command and streams its events.
func (s *Service) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	cfg := req.Msg.GetProcess()
	if cfg.GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is empty: give the program to run, e.g. /bin/bash"))
	}
	u, err := s.user(req.Header())
	if err != nil {
		return err
	}
	cmd, err := s.command(cfg, u)
	if err != nil {
		return err
	}
	tag := req.Msg.GetTag()

	// The process lives until the request's deadline (Connect-Timeout-Ms), not until the
	// client disconnects.
	lifetime, cancel := context.WithCancel(context.Background())
	if dl, ok := ctx.Deadline(); ok {
		lifetime, cancel = context.WithDeadline(context.Background(), dl)
	}

	s.mu.Lock()
	if tag != "" {
		if _, taken := s.tags[tag]; taken {
			s.mu.Unlock()
			cancel()
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("a running process already has tag %q", tag))
		}
	}
	p, sub, err := launch(s.starter, startSpec{
		cmd:       cmd,
		config:    cfg,
		tag:       tag,
		pty:       req.Msg.Pty,
		openStdin: req.Msg.Stdin == nil || req.Msg.GetStdin(),
		stall:     s.stall,
	}, lifetime)
	if err != nil {
		s.mu.Unlock()
		cancel()
		return connect.NewError(startErrorCode(err), fmt.Errorf("start %s: %w", cfg.GetCmd(), err))
	}
	s.running[p.pid] = p
	if tag != "" {
		s.tags[tag] = p
	}
	s.mu.Unlock()
	s.log.Debug("process started", "pid", p.pid, "cmd", cfg.GetCmd(), "user", u.Name, "pty", p.isPTY)

	go func() {
		<-p.done
		cancel()
		s.retire(p)
	}()

	return s.follow(ctx, req.Header().Get(keepaliveHeader), p, sub, func(ev *pb.ProcessEvent) error {
		return stream.Send(&pb.StartResponse{Event: ev})
	})
}

// Connect reattaches to a process by pid or tag.
func (s *Service) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	p, err := s.find(req.Msg.GetProcess(), true)
	if err != nil {
		return err
	}
	sub, end := p.hub.subscribe()
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.ConnectResponse{Event: ev}) }
	if end != nil {
		if err := send(startEvent(p.pid)); err != nil {
			return err
		}
		return send(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: end}})
	}
	return s.follow(ctx, req.Header().Get(keepaliveHeader), p, sub, send)
}

// follow sends the start event, then the subscriber's events and keepalives until the end
// event, the client leaving or the stream being cut off.
func (s *Service) follow(ctx context.Context, keepalive string, p *proc, sub *subscriber, send func(*pb.ProcessEvent) error) error {
	defer p.hub.unsubscribe(sub)
	if err := send(startEvent(p.pid)); err != nil {
		return err
	}
	tick := time.NewTicker(keepaliveInterval(keepalive))
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-sub.events:
			if !ok {
				return nil
			}
			if err := send(ev); err != nil {
				return err
			}
			if ev.GetEnd() != nil {
				return nil
			}
		case <-sub.gone:
			if sub.err != nil {
				return connect.NewError(connect.CodeResourceExhausted, sub.err)
			}
			return nil
		case <-tick.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// List returns the running processes.
func (s *Service) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	s.mu.Lock()
	procs := make([]*pb.ProcessInfo, 0, len(s.running))
	for _, p := range s.running {
		info := &pb.ProcessInfo{Config: p.config, Pid: p.pid}
		if p.tag != "" {
			info.Tag = &p.tag
		}
		procs = append(procs, info)
	}
	s.mu.Unlock()
	sort.Slice(procs, func(i, j int) bool { return procs[i].Pid < procs[j].Pid })
	return connect.NewResponse(&pb.ListResponse{Processes: procs}), nil
}

// SendInput writes one chunk to a process's stdin or PTY.
func (s *Service) SendInput(ctx context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	p, err := s.find(req.Msg.GetProcess(), false)
	if err != nil {
		return nil, err
	}
	if err := writeInput(ctx, p, req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

// StreamInput writes every data event of a client stream to the selected process.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		msg := stream.Msg()
		switch ev := msg.GetEvent().(type) {
		case *pb.StreamInputRequest_Start:
			found, err := s.find(ev.Start.GetProcess(), false)
			if err != nil {
				return nil, err
			}
			p = found
		case *pb.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first StreamInput message must be a start event naming the process"))
			}
			if err := writeInput(ctx, p, ev.Data.GetInput()); err != nil {
				return nil, err
			}
		case *pb.StreamInputRequest_Keepalive:
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StreamInputResponse{}), nil
}

// SendSignal signals a running process and its process group.
func (s *Service) SendSignal(ctx context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case pb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	case pb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unsupported signal %v: use SIGNAL_SIGTERM or SIGNAL_SIGKILL", req.Msg.GetSignal()))
	}
	p, err := s.find(req.Msg.GetProcess(), false)
	if err != nil {
		return nil, err
	}
	if err := p.killGroup(sig); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("signal pid %d: %w", p.pid, err))
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}

// Update resizes a PTY.
func (s *Service) Update(ctx context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	p, err := s.find(req.Msg.GetProcess(), false)
	if err != nil {
		return nil, err
	}
	if req.Msg.Pty != nil {
		if err := p.resize(req.Msg.Pty); err != nil {
			return nil, inputError(err)
		}
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}

// CloseStdin closes a process's stdin pipe.
func (s *Service) CloseStdin(ctx context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	p, err := s.find(req.Msg.GetProcess(), false)
	if err != nil {
		return nil, err
	}
	if err := p.closeStdin(); err != nil {
		return nil, inputError(err)
	}
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}

// command builds the exec.Cmd for a process config run as u.
func (s *Service) command(cfg *pb.ProcessConfig, u identity.User) (*exec.Cmd, error) {
	cwd := s.env.DefaultWorkdir()
	if cfg.Cwd != nil && cfg.GetCwd() != "" {
		var err error
		cwd, err = identity.ResolvePath(cfg.GetCwd(), u, s.env.DefaultWorkdir())
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd: %w", err))
		}
	}
	if cwd == "" {
		// Accounts such as nobody have a home that does not exist; start them in /.
		cwd = u.Home
		if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
			cwd = "/"
		}
	}
	if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q does not exist or is not a directory", cwd))
	}

	path := cfg.GetCmd()
	if !filepath.IsAbs(path) {
		// Resolve against the sandbox PATH, not envd's own.
		if lp, err := lookPath(path, s.env.Vars()["PATH"]); err == nil {
			path = lp
		}
	}
	cmd := &exec.Cmd{Path: path, Args: append([]string{cfg.GetCmd()}, cfg.GetArgs()...), Dir: cwd}
	cmd.Env = s.environ(u, cfg.GetEnvs())
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if identity.IsRoot() {
		groups := make([]uint32, 0, len(u.Groups))
		groups = append(groups, u.Groups...)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
	} else if cur, err := identity.Current(); err == nil && cur.UID != u.UID {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("envd runs as %s and cannot start processes as %s", cur.Name, u.Name))
	}
	return cmd, nil
}

// environ builds a process environment: the user's basics, then /init's variables, then the
// request's.
func (s *Service) environ(u identity.User, extra map[string]string) []string {
	env := map[string]string{
		"PATH":    defaultPath,
		"HOME":    u.Home,
		"USER":    u.Name,
		"LOGNAME": u.Name,
	}
	for k, v := range s.env.Vars() {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// user resolves the request's user.
func (s *Service) user(h http.Header) (identity.User, error) {
	name, err := identity.UsernameFromRequest(h)
	if err != nil {
		return identity.User{}, connect.NewError(connect.CodeInvalidArgument, err)
	}
	u, err := s.env.UserFor(name)
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return identity.User{}, connect.NewError(connect.CodeUnauthenticated, err)
		}
		return identity.User{}, connect.NewError(connect.CodeInternal, err)
	}
	return u, nil
}

// find looks a process up by pid or tag; ended processes are found only when withEnded is set.
func (s *Service) find(sel *pb.ProcessSelector, withEnded bool) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p *proc
	var what string
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		p, what = s.running[v.Pid], "pid "+strconv.FormatUint(uint64(v.Pid), 10)
		if p == nil && withEnded {
			for _, e := range s.ended {
				if e.pid == v.Pid {
					p = e
				}
			}
		}
	case *pb.ProcessSelector_Tag:
		p, what = s.tags[v.Tag], fmt.Sprintf("tag %q", v.Tag)
		if p == nil && withEnded {
			for _, e := range s.ended {
				if e.tag == v.Tag {
					p = e
				}
			}
		}
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process selector is empty: give a pid or a tag"))
	}
	if p == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with %s not found", what))
	}
	return p, nil
}

// retire moves an ended process from the running set to the bounded list of ended ones.
func (s *Service) retire(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, p.pid)
	if p.tag != "" && s.tags[p.tag] == p {
		delete(s.tags, p.tag)
	}
	s.ended = append(s.ended, p)
	p.retiredAt = time.Now()
	cut := 0
	for cut < len(s.ended) && (len(s.ended)-cut > maxEnded || time.Since(s.ended[cut].retiredAt) > endedRetention) {
		cut++
	}
	s.ended = s.ended[cut:]
}

func writeInput(ctx context.Context, p *proc, in *pb.ProcessInput) error {
	var err error
	switch v := in.GetInput().(type) {
	case *pb.ProcessInput_Stdin:
		err = p.writeInput(ctx, v.Stdin, false)
	case *pb.ProcessInput_Pty:
		err = p.writeInput(ctx, v.Pty, true)
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input is empty: set stdin or pty"))
	}
	if err != nil {
		return inputError(err)
	}
	return nil
}

func inputError(err error) error {
	switch {
	case errors.Is(err, errProcessEnded):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, errNotPTY), errors.Is(err, errIsPTY), errors.Is(err, errStdinClosed):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}

func startErrorCode(err error) connect.Code {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return connect.CodeNotFound
	case errors.Is(err, os.ErrPermission):
		return connect.CodePermissionDenied
	default:
		return connect.CodeInternal
	}
}

func startEvent(pid uint32) *pb.ProcessEvent {
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: pid}}}
}

func keepaliveInterval(h string) time.Duration {
	if n, err := strconv.Atoi(h); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return defaultKeepalive
}

// lookPath finds an executable in a PATH list (the sandbox's, else the default).
func lookPath(name, pathList string) (string, error) {
	if pathList == "" {
		pathList = defaultPath
	}
	for _, dir := range filepath.SplitList(pathList) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
