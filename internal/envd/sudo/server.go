package sudo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// DefaultGroup is the group whose members may use sudo: Debian's own sudoers group, which the
// base template's user `user` belongs to.
const DefaultGroup = "sudo"

// requestTimeout bounds how long a client may take to send its request after connecting.
const requestTimeout = 10 * time.Second

// Exit is how a started command ended.
type Exit struct {
	Status unix.WaitStatus
	Err    error // waiting failed
}

// Spawner starts cmd and reports its end. envd passes its process service's, which owns every
// wait when envd is PID 1 and reaps orphans.
type Spawner func(cmd *exec.Cmd) (<-chan Exit, error)

// Config configures a Server.
type Config struct {
	// Path is the socket to listen on; its directory is created root-only-writable.
	Path string
	// Group names the group whose members may use sudo (DefaultGroup when empty). Root always
	// may.
	Group string
	// SandboxVars returns the variables /init set for the whole sandbox.
	SandboxVars func() map[string]string
	// Spawn starts commands; nil starts and waits for them directly.
	Spawn Spawner
	Log   *slog.Logger
}

// Server runs commands for sudo clients.
type Server struct {
	cfg Config
	ln  *net.UnixListener

	wg     sync.WaitGroup
	closed chan struct{}
}

// Listen opens the socket. A file left at the path (from before a reboot of a VM's disk) is
// removed first, and the directory is made root's with mode 0755, so only envd can bind there.
func Listen(cfg Config) (*Server, error) {
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.SandboxVars == nil {
		cfg.SandboxVars = func() map[string]string { return nil }
	}
	if cfg.Spawn == nil {
		cfg.Spawn = directSpawn
	}
	dir := filepath.Dir(cfg.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sudo socket dir: %w", err)
	}
	// The directory must not be writable by anyone else, or they could replace the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sudo socket dir: %w", err)
	}
	if identity.IsRoot() {
		if err := os.Chown(dir, 0, 0); err != nil {
			return nil, fmt.Errorf("sudo socket dir: %w", err)
		}
	}
	if err := os.Remove(cfg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale sudo socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Path, err)
	}
	// Anyone may connect; the policy is checked on the peer's kernel credentials.
	if err := os.Chmod(cfg.Path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("sudo socket: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln, closed: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	cfg.Log.Info("sudo listening", "unix", cfg.Path, "group", cfg.Group)
	return s, nil
}

// Close stops accepting requests. Commands already running keep running.
func (s *Server) Close() error {
	close(s.closed)
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.cfg.Log.Error("sudo accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go s.handle(c)
	}
}

// peer is the calling process as the kernel reports it.
type peer struct {
	pid, uid, gid int
}

func peerCred(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if cerr != nil {
		return peer{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}, nil
}

// Allowed reports whether the account uid may use sudo: root, or a member of group (its
// primary group or a listed member in /etc/group). It returns the account and, when it may
// not, why.
func Allowed(uid int, group string) (identity.User, error) {
	u, err := lookupUID(strconv.Itoa(uid))
	if err != nil {
		return identity.User{}, fmt.Errorf("uid %d has no account in this sandbox, so it may not use sudo", uid)
	}
	if uid == 0 {
		return u, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return u, fmt.Errorf("%s may not use sudo: there is no group %q in this sandbox", u.Name, group)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return u, fmt.Errorf("group %q has non-numeric gid %q", group, g.Gid)
	}
	for _, have := range u.Groups {
		if have == uint32(gid) {
			return u, nil
		}
	}
	return u, fmt.Errorf("%s may not use sudo: only root and members of group %q may (as root: usermod -aG %s %s)", u.Name, group, group, u.Name)
}

// handle serves one client: request, policy, start, signals, end.
func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	log := s.cfg.Log
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	who, err := peerCred(c)
	if err != nil {
		log.Error("sudo: peer credentials", "err", err)
		return
	}
	req, stdio, rest, err := readRequest(c)
	defer closeFiles(stdio)
	if err != nil {
		_, _ = c.Write(encode(reply{Error: "bad request: " + err.Error()}))
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	caller, err := Allowed(who.uid, s.cfg.Group)
	if err != nil {
		log.Warn("sudo refused", "uid", who.uid, "pid", who.pid, "err", err)
		_, _ = c.Write(encode(reply{Error: err.Error()}))
		return
	}
	if req.Check {
		_, _ = c.Write(encode(reply{Allowed: true}))
		return
	}
	if len(stdio) != 3 {
		_, _ = c.Write(encode(reply{Error: fmt.Sprintf("bad request: %d descriptors passed, want stdin, stdout and stderr", len(stdio))}))
		return
	}
	cmd, err := s.command(req, caller, stdio)
	if err != nil {
		_, _ = c.Write(encode(reply{Error: err.Error()}))
		return
	}
	exited, err := s.cfg.Spawn(cmd)
	if err != nil {
		_, _ = c.Write(encode(reply{Error: fmt.Sprintf("%s: %v", req.Args0(), err)}))
		return
	}
	closeFiles(stdio)
	stdio = nil
	pid := cmd.Process.Pid
	log.Info("sudo started", "caller", caller.Name, "pid", pid, "as", targetName(req.User), "cmd", cmd.Path)
	if _, err := c.Write(encode(reply{Started: pid})); err != nil {
		// The client is gone already; the command must not outlive it (see relay).
		_ = killGroup(pid, unix.SIGKILL)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go s.relay(ctx, rest, pid)
	st := <-exited
	stop()
	end := reply{Done: true}
	switch {
	case st.Err != nil:
		end.Exit = 1
		log.Error("sudo wait", "pid", pid, "err", st.Err)
	case st.Status.Signaled():
		end.Signal = int(st.Status.Signal())
	default:
		end.Exit = st.Status.ExitStatus()
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write(encode(end))
}

// relay delivers the signals the client forwards to the command's process group. When the
// client goes away before the command ends (killed, its group killed by an SDK kill or a
// command timeout), the command is killed too: it lives no longer than the sudo that ran it,
// as a command run by a real sudo shares its process group and dies with it.
func (s *Server) relay(ctx context.Context, r *lineReader, pid int) {
	for {
		var m clientMsg
		err := r.next(&m, 1024)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			_ = killGroup(pid, unix.SIGKILL)
			return
		}
		if m.Signal <= 0 || m.Signal >= 65 {
			continue
		}
		_ = killGroup(pid, unix.Signal(m.Signal))
	}
}

// killGroup signals the command's session (its process group), or the command alone when
// the group is gone.
func killGroup(pid int, sig unix.Signal) error {
	err := unix.Kill(-pid, sig)
	if errors.Is(err, unix.ESRCH) {
		err = unix.Kill(pid, sig)
	}
	return err
}

// targetName names the account a request runs as, for the log.
func targetName(user string) string {
	if user == "" {
		return "root"
	}
	return user
}

// Args0 names the command for messages.
func (r request) Args0() string {
	if len(r.Args) == 0 {
		return "shell"
	}
	return r.Args[0]
}

// command builds the exec.Cmd for req.
func (s *Server) command(req request, caller identity.User, stdio []*os.File) (*exec.Cmd, error) {
	to, err := lookupTarget(req.User)
	if err != nil {
		return nil, err
	}
	if !identity.IsRoot() {
		if cur, err := identity.Current(); err != nil || cur.UID != to.UID {
			return nil, fmt.Errorf("envd does not run as root, so it cannot run commands as %s", to.Name)
		}
	}
	if len(req.Args) == 0 && !req.Shell && !req.Login {
		return nil, errors.New("no command given")
	}
	p, err := buildPlan(req, caller, to, s.cfg.SandboxVars())
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: p.path, Args: p.argv, Dir: p.dir, Env: p.env}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio[0], stdio[1], stdio[2]
	groups := append([]uint32(nil), to.Groups...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A session of its own: signals go to its whole group, and it has no controlling
		// terminal (the caller's terminal belongs to the caller's session).
		Setsid:     true,
		Credential: &syscall.Credential{Uid: to.UID, Gid: to.GID, Groups: groups},
	}
	if !identity.IsRoot() {
		cmd.SysProcAttr.Credential = nil
	}
	return cmd, nil
}

// readRequest reads the first message and the descriptors that came with it. The returned
// reader continues after the request, for the signal messages.
func readRequest(c *net.UnixConn) (request, []*os.File, *lineReader, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room for one more descriptor than expected
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	var files []*os.File
	if oobn > 0 {
		files = parseRights(oob[:oobn])
	}
	if err != nil {
		return request{}, files, nil, err
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return request{}, files, nil, errors.New("too many descriptors passed")
	}
	lr := newLineReader(io.MultiReader(bytes.NewReader(buf[:n]), c))
	var req request
	if err := lr.next(&req, maxRequest); err != nil {
		return request{}, files, nil, err
	}
	return req, files, lr, nil
}

func parseRights(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "sudo-stdio-"+strconv.Itoa(fd)))
		}
	}
	return files
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// directSpawn starts cmd and waits for it itself (envd not running as PID 1, and tests).
func directSpawn(cmd *exec.Cmd) (<-chan Exit, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan Exit, 1)
	go func() {
		st, err := cmd.Process.Wait()
		if err != nil {
			ch <- Exit{Err: err}
			return
		}
		ch <- Exit{Status: unix.WaitStatus(st.Sys().(syscall.WaitStatus))}
	}()
	return ch, nil
}
