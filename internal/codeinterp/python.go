package codeinterp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
)

// The python kernel is Debian's ipykernel, started by this server as
// `python3 -m ipykernel_launcher -f <connection file>` and spoken to over ZeroMQ (shell,
// iopub, control) with the pure-Go zmq4: no Jupyter server in between. The kernel picks its
// own ports and key and writes them to the connection file, which lives in a directory only
// the server's user can read.

const (
	kernelStartTimeout = 60 * time.Second
	// replyGrace is how long an execution waits for its execute_reply once the kernel said
	// it is idle: the reply is sent first but on another socket.
	replyGrace = 200 * time.Millisecond
)

// errKernelDied ends an execution whose kernel process exited under it.
var errKernelDied = errors.New("the kernel process exited")

type pythonKernel struct {
	cfg kernelConfig
	log *slog.Logger

	mu sync.Mutex
	p  *pyProc // the current process; replaced by restart
}

func startPython(ctx context.Context, cfg kernelConfig) (*pythonKernel, error) {
	k := &pythonKernel{cfg: cfg, log: slog.With("kernel", "python")}
	p, err := startPyProc(ctx, cfg)
	if err != nil {
		return nil, err
	}
	k.p = p
	return k, nil
}

func (k *pythonKernel) proc() *pyProc {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.p
}

// executeContent is an execute_request, with the flags E2B's server sends.
type executeContent struct {
	Code            string            `json:"code"`
	Silent          bool              `json:"silent"`
	StoreHistory    bool              `json:"store_history"`
	UserExpressions map[string]string `json:"user_expressions"`
	AllowStdin      bool              `json:"allow_stdin"`
	StopOnError     bool              `json:"stop_on_error"`
}

// execute sends stop_on_error false, unlike E2B: with true, ipykernel aborts requests that
// reach it just after a failed one (it keeps aborting for a moment after it reports idle),
// so the next cell would fail with ExecutionAborted. The server never queues requests in a
// kernel (one execution per context at a time), so the flag has nothing else to stop.
func (k *pythonKernel) execute(ctx context.Context, code string, emit func(line)) error {
	return k.proc().run(ctx, executeContent{Code: code, StoreHistory: true, UserExpressions: map[string]string{}}, emit)
}

// Environment code: a JSON object of strings is also a Python dict literal (Go escapes
// control characters as \uXXXX), so no value can break out of its literal.

func (k *pythonKernel) setEnv(ctx context.Context, vars map[string]string) error {
	if len(vars) == 0 {
		return nil
	}
	j, err := json.Marshal(vars)
	if err != nil {
		return err
	}
	return k.silent(ctx, fmt.Sprintf("__import__('os').environ.update(%s)\n", j))
}

func (k *pythonKernel) pushEnv(ctx context.Context, vars map[string]string) error {
	j, err := json.Marshal(vars)
	if err != nil {
		return err
	}
	return k.silent(ctx, fmt.Sprintf("_hearth_env_saved = {_k: __import__('os').environ.get(_k) for _k in %s}\n__import__('os').environ.update(%s)\n", j, j))
}

func (k *pythonKernel) popEnv(ctx context.Context) error {
	return k.silent(ctx, "[__import__('os').environ.pop(_k, None) if _v is None else __import__('os').environ.__setitem__(_k, _v) for _k, _v in _hearth_env_saved.items()]\ndel _hearth_env_saved\n")
}

// silent runs code that must not show or count as an execution; an exception in it is an error.
func (k *pythonKernel) silent(ctx context.Context, code string) error {
	var failed line
	err := k.proc().run(ctx, executeContent{Code: code, Silent: true, UserExpressions: map[string]string{}}, func(l line) {
		if l["type"] == "error" {
			failed = l
		}
	})
	if err != nil {
		return err
	}
	if failed != nil {
		return fmt.Errorf("%v: %v", failed["name"], failed["value"])
	}
	return nil
}

// interrupt sends SIGINT to the kernel, which ipykernel turns into KeyboardInterrupt in the
// running cell (its interrupt_mode is "signal").
func (k *pythonKernel) interrupt() error {
	p := k.proc()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("interrupt python kernel: %w", err)
	}
	return nil
}

func (k *pythonKernel) restart(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.p.close()
	p, err := startPyProc(ctx, k.cfg)
	if err != nil {
		return fmt.Errorf("restart python kernel: %w", err)
	}
	k.p = p
	return nil
}

func (k *pythonKernel) close() { k.proc().close() }

// pyProc is one ipykernel process and the sockets to it.
type pyProc struct {
	cmd    *exec.Cmd
	dir    string
	sig    *signer
	shell  zmq4.Socket
	iopub  zmq4.Socket
	cancel context.CancelFunc
	exited chan struct{} // closed when the process is gone
	stderr *tailBuffer

	mu      sync.Mutex
	waiters map[string]chan message // by the msg_id of the request they answer
}

// connectionFile is what ipykernel writes for its clients.
type connectionFile struct {
	IP              string `json:"ip"`
	Transport       string `json:"transport"`
	Key             string `json:"key"`
	SignatureScheme string `json:"signature_scheme"`
	ShellPort       int    `json:"shell_port"`
	IOPubPort       int    `json:"iopub_port"`
	ControlPort     int    `json:"control_port"`
}

func startPyProc(ctx context.Context, cfg kernelConfig) (_ *pyProc, err error) {
	ctx, cancelStart := context.WithTimeout(ctx, kernelStartTimeout)
	defer cancelStart()
	dir, err := os.MkdirTemp(cfg.runDir, "python-")
	if err != nil {
		return nil, fmt.Errorf("start python kernel: %w", err)
	}
	connPath := filepath.Join(dir, "connection.json")
	cmd := exec.Command(cfg.python, "-m", "ipykernel_launcher", "-f", connPath,
		// Tracebacks without ANSI colours, reprs never shortened, no history database in $HOME.
		"--InteractiveShell.colors=NoColor", "--PlainTextFormatter.max_seq_length=0", "--HistoryManager.enabled=False")
	cmd.Dir = cfg.cwd
	cmd.Env = cfg.env
	stderr := &tailBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	// Its own process group, so that a terminal's Ctrl-C aimed at the server does not reach it;
	// and it dies with the server, so a restarted server never leaves kernels behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start python kernel (%s): %w", cfg.python, err)
	}
	sockCtx, cancel := context.WithCancel(context.Background())
	p := &pyProc{cmd: cmd, dir: dir, cancel: cancel, exited: make(chan struct{}), stderr: stderr, waiters: map[string]chan message{}}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	conn, err := waitConnectionFile(ctx, connPath, p.exited)
	if err != nil {
		return nil, fmt.Errorf("start python kernel: %w (kernel output: %s)", err, stderr.String())
	}
	if conn.SignatureScheme != "hmac-sha256" {
		return nil, fmt.Errorf("start python kernel: unsupported signature scheme %q", conn.SignatureScheme)
	}
	p.sig = &signer{key: []byte(conn.Key), session: newID()}
	addr := func(port int) string { return fmt.Sprintf("%s://%s:%d", conn.Transport, conn.IP, port) }
	p.shell = zmq4.NewDealer(sockCtx, zmq4.WithDialerRetry(50*time.Millisecond), zmq4.WithDialerMaxRetries(40))
	if err := p.shell.Dial(addr(conn.ShellPort)); err != nil {
		return nil, fmt.Errorf("start python kernel: shell: %w", err)
	}
	p.iopub = zmq4.NewSub(sockCtx, zmq4.WithDialerRetry(50*time.Millisecond), zmq4.WithDialerMaxRetries(40))
	if err := p.iopub.Dial(addr(conn.IOPubPort)); err != nil {
		return nil, fmt.Errorf("start python kernel: iopub: %w", err)
	}
	if err := p.iopub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return nil, fmt.Errorf("start python kernel: subscribe: %w", err)
	}
	go p.readLoop(p.shell)
	go p.readLoop(p.iopub)
	if err := p.handshake(ctx); err != nil {
		return nil, fmt.Errorf("start python kernel: %w (kernel output: %s)", err, stderr.String())
	}
	return p, nil
}

// waitConnectionFile waits until the kernel has written its connection file in full.
func waitConnectionFile(ctx context.Context, path string, exited <-chan struct{}) (connectionFile, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var c connectionFile
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &c) == nil && c.ShellPort > 0 && c.IOPubPort > 0 && c.Key != "" {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return c, fmt.Errorf("no connection file from the kernel: %w", ctx.Err())
		case <-exited:
			return c, errKernelDied
		case <-t.C:
		}
	}
}

// handshake asks for kernel_info until the answer's status messages arrive on iopub: then the
// subscription is live (a SUB socket misses whatever is published before it joins).
func (p *pyProc) handshake(ctx context.Context) error {
	for {
		ch, id, err := p.send("kernel_info_request", struct{}{})
		if err != nil {
			return err
		}
		timer := time.NewTimer(500 * time.Millisecond)
		gotStatus := false
	wait:
		for !gotStatus {
			select {
			case m := <-ch:
				gotStatus = m.Header.MsgType == "status"
			case <-timer.C:
				break wait
			case <-p.exited:
				timer.Stop()
				p.forget(id)
				return errKernelDied
			case <-ctx.Done():
				timer.Stop()
				p.forget(id)
				return fmt.Errorf("kernel did not answer: %w", ctx.Err())
			}
		}
		timer.Stop()
		p.forget(id)
		if gotStatus {
			return nil
		}
	}
}

// send sends a request on shell and returns the channel its replies and iopub messages come on.
func (p *pyProc) send(msgType string, content any) (chan message, string, error) {
	frames, id, err := p.sig.encode(msgType, content)
	if err != nil {
		return nil, "", err
	}
	ch := make(chan message, 256)
	p.mu.Lock()
	p.waiters[id] = ch
	p.mu.Unlock()
	if err := p.shell.SendMulti(zmq4.NewMsgFrom(frames...)); err != nil {
		p.forget(id)
		return nil, "", fmt.Errorf("send %s to the kernel: %w", msgType, err)
	}
	return ch, id, nil
}

func (p *pyProc) forget(id string) {
	p.mu.Lock()
	delete(p.waiters, id)
	p.mu.Unlock()
}

// readLoop hands each message read from s to the waiter of the request it answers.
func (p *pyProc) readLoop(s zmq4.Socket) {
	for {
		msg, err := s.Recv()
		if err != nil {
			return
		}
		m, err := p.sig.decode(msg.Frames)
		if err != nil {
			slog.Warn("dropping a kernel message", "err", err)
			continue
		}
		p.mu.Lock()
		ch := p.waiters[m.ParentHeader.MsgID]
		p.mu.Unlock()
		if ch == nil {
			continue
		}
		select {
		case ch <- m:
		case <-p.exited:
			return
		}
	}
}

// run sends an execute_request and turns the kernel's messages about it into lines.
func (p *pyProc) run(ctx context.Context, req executeContent, emit func(line)) error {
	ch, id, err := p.send("execute_request", req)
	if err != nil {
		return err
	}
	defer p.forget(id)
	var (
		sawError, idle, replied bool
		grace                   <-chan time.Time
	)
	for !(idle && replied) {
		select {
		case m := <-ch:
			switch m.Header.MsgType {
			case "status":
				var c struct {
					State string `json:"execution_state"`
				}
				_ = json.Unmarshal(m.Content, &c)
				if c.State == "idle" {
					idle = true
					if !replied {
						grace = time.After(replyGrace)
					}
				}
			case "execute_reply":
				replied = true
				var c struct {
					Status    string   `json:"status"`
					EName     string   `json:"ename"`
					EValue    string   `json:"evalue"`
					Traceback []string `json:"traceback"`
				}
				_ = json.Unmarshal(m.Content, &c)
				switch {
				case c.Status == "error" && !sawError:
					sawError = true
					emit(line{"type": "error", "name": c.EName, "value": c.EValue, "traceback": joinTraceback(c.Traceback)})
				case c.Status == "aborted" || c.Status == "abort":
					emit(errorLine("ExecutionAborted", "Execution was aborted"))
					return nil
				}
			case "error":
				if sawError {
					continue
				}
				sawError = true
				var c struct {
					EName     string   `json:"ename"`
					EValue    string   `json:"evalue"`
					Traceback []string `json:"traceback"`
				}
				_ = json.Unmarshal(m.Content, &c)
				emit(line{"type": "error", "name": c.EName, "value": c.EValue, "traceback": joinTraceback(c.Traceback)})
			case "execute_input":
				var c struct {
					Count int `json:"execution_count"`
				}
				_ = json.Unmarshal(m.Content, &c)
				emit(line{"type": "number_of_executions", "execution_count": c.Count})
			case "stream":
				var c struct {
					Name string `json:"name"`
					Text string `json:"text"`
				}
				_ = json.Unmarshal(m.Content, &c)
				typ := "stdout"
				if c.Name == "stderr" {
					typ = "stderr"
				}
				emit(line{"type": typ, "text": c.Text, "timestamp": kernelTimestamp(m.Header.Date)})
			case "display_data", "execute_result":
				var c struct {
					Data map[string]json.RawMessage `json:"data"`
				}
				if err := json.Unmarshal(m.Content, &c); err != nil {
					slog.Warn("dropping a result the kernel sent", "err", err)
					continue
				}
				emit(resultLine(c.Data, m.Header.MsgType == "execute_result"))
			}
		case <-grace:
			return nil
		case <-p.exited:
			return errKernelDied
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// kernelTimestamp re-serialises a message date the way E2B's server does (ISO 8601 with an
// offset); the Python SDK hands it to stdout callbacks.
func kernelTimestamp(date string) string {
	t, err := time.Parse(time.RFC3339Nano, date)
	if err != nil {
		t = time.Now()
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000-07:00")
}

// nowTimestamp is kernelTimestamp's format for output the server itself timestamps.
func nowTimestamp() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000000-07:00") }

// close kills the kernel's process group and forgets the process.
func (p *pyProc) close() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
	p.cancel()
	if p.shell != nil {
		_ = p.shell.Close()
	}
	if p.iopub != nil {
		_ = p.iopub.Close()
	}
	_ = os.RemoveAll(p.dir)
}

// tailBuffer keeps the last max bytes written to it: a kernel's own output, for errors.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// sortedKeys returns m's keys in order, so that generated code is deterministic.
func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}
