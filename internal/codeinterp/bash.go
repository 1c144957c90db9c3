package codeinterp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The bash kernel is one persistent `bash` the server drives itself (Debian has no
// bash_kernel): each cell is written to a file and sourced by a function in that shell, so
// variables, functions and the working directory carry over between cells. After the cell the
// shell prints a marker with the exit status on stdout and on stderr; the marker is random per
// process, so cell output cannot fake it by accident.

// bashPrelude defines the runner. The INT trap makes Ctrl-C (interrupt) end the sourced cell
// and return 130 instead of killing the shell, which a non-interactive bash would do.
const bashPrelude = `__hearth_run() {
  trap 'trap - INT; return 130' INT
  . "$1" </dev/null
  local __hearth_rc=$?
  trap - INT
  return $__hearth_rc
}
`

type bashKernel struct {
	cfg    kernelConfig
	pushed []string // the names pushEnv set, for popEnv

	mu sync.Mutex
	p  *bashProc
}

type bashProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	marker string
	dir    string
	count  int
	exited chan struct{}
	// stdout and stderr deliver the lines the shell writes; a marker line ends a cell.
	stdout, stderr chan string
}

func startBash(ctx context.Context, cfg kernelConfig) (*bashKernel, error) {
	p, err := startBashProc(cfg)
	if err != nil {
		return nil, err
	}
	return &bashKernel{cfg: cfg, p: p}, nil
}

func startBashProc(cfg kernelConfig) (*bashProc, error) {
	dir, err := os.MkdirTemp(cfg.runDir, "bash-")
	if err != nil {
		return nil, fmt.Errorf("start bash: %w", err)
	}
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	p := &bashProc{
		marker: "__hearth_cell_done_" + hex.EncodeToString(rnd[:]) + "__",
		dir:    dir,
		exited: make(chan struct{}),
		stdout: make(chan string, 64),
		stderr: make(chan string, 64),
	}
	p.cmd = exec.Command("bash", "--noprofile", "--norc")
	p.cmd.Dir = cfg.cwd
	p.cmd.Env = cfg.env
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start bash: %w", err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start bash: %w", err)
	}
	errOut, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start bash: %w", err)
	}
	if err := p.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start bash: %w", err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); readLines(out, p.stdout) }()
	go func() { defer readers.Done(); readLines(errOut, p.stderr) }()
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	if _, err := io.WriteString(p.stdin, bashPrelude); err != nil {
		p.close()
		return nil, fmt.Errorf("start bash: %w", err)
	}
	return p, nil
}

// readLines sends each line of r, newline included, to ch, and closes ch at the end.
func readLines(r io.Reader, ch chan<- string) {
	defer close(ch)
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			ch <- s
		}
		if err != nil {
			return
		}
	}
}

func (k *bashKernel) proc() *bashProc {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.p
}

func (k *bashKernel) execute(ctx context.Context, code string, emit func(line)) error {
	p := k.proc()
	p.count++
	emit(line{"type": "number_of_executions", "execution_count": p.count})
	rc, err := p.run(ctx, code, emit)
	if err != nil {
		return err
	}
	switch rc {
	case 0:
	case 130:
		emit(line{"type": "error", "name": "KeyboardInterrupt", "value": "interrupted", "traceback": ""})
	default:
		emit(line{"type": "error", "name": "Error", "value": "exit status " + strconv.Itoa(rc), "traceback": ""})
	}
	return nil
}

func (k *bashKernel) setEnv(ctx context.Context, vars map[string]string) error {
	var b strings.Builder
	for _, name := range sortedKeys(vars) {
		fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(vars[name]))
	}
	return k.silent(ctx, b.String())
}

// pushEnv keeps each replaced variable in __hearth_old_<name>, or __hearth_unset_<name> when
// it was not set. Names are checked by the server (validEnvName) before they get here.
func (k *bashKernel) pushEnv(ctx context.Context, vars map[string]string) error {
	var b strings.Builder
	k.pushed = sortedKeys(vars)
	for _, n := range k.pushed {
		fmt.Fprintf(&b, "if [ -n \"${%[1]s+x}\" ]; then __hearth_old_%[1]s=\"$%[1]s\"; else __hearth_unset_%[1]s=1; fi\nexport %[1]s=%[2]s\n", n, shellQuote(vars[n]))
	}
	return k.silent(ctx, b.String())
}

func (k *bashKernel) popEnv(ctx context.Context) error {
	var b strings.Builder
	for _, n := range k.pushed {
		fmt.Fprintf(&b, "if [ -n \"${__hearth_unset_%[1]s+x}\" ]; then unset %[1]s; else export %[1]s=\"$__hearth_old_%[1]s\"; fi\nunset __hearth_old_%[1]s __hearth_unset_%[1]s\n", n)
	}
	k.pushed = nil
	return k.silent(ctx, b.String())
}

func (k *bashKernel) silent(ctx context.Context, code string) error {
	if code == "" {
		return nil
	}
	rc, err := k.proc().run(ctx, code, func(line) {})
	if err != nil {
		return err
	}
	if rc != 0 {
		return fmt.Errorf("exit status %d", rc)
	}
	return nil
}

func (k *bashKernel) interrupt() error {
	p := k.proc()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil {
		return fmt.Errorf("interrupt bash: %w", err)
	}
	return nil
}

func (k *bashKernel) restart(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.p.close()
	p, err := startBashProc(k.cfg)
	if err != nil {
		return fmt.Errorf("restart bash: %w", err)
	}
	k.p = p
	return nil
}

func (k *bashKernel) close() { k.proc().close() }

// run sources code in the shell, streaming its output lines, and returns its exit status.
func (p *bashProc) run(ctx context.Context, code string, emit func(line)) (int, error) {
	f := filepath.Join(p.dir, "cell.sh")
	if err := os.WriteFile(f, []byte(code+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("bash cell: %w", err)
	}
	cmd := fmt.Sprintf("__hearth_run %s; printf '%%s %%d\\n' %s $?; printf '%%s\\n' %s >&2\n", shellQuote(f), p.marker, p.marker)
	if _, err := io.WriteString(p.stdin, cmd); err != nil {
		return 0, fmt.Errorf("bash cell: %w", err)
	}
	rc, outDone, errDone := -1, false, false
	for !outDone || !errDone {
		select {
		case s, ok := <-p.stdout:
			if !ok {
				return 0, errKernelDied
			}
			text, rest, found := strings.Cut(s, p.marker)
			if text != "" {
				emit(line{"type": "stdout", "text": text, "timestamp": nowTimestamp()})
			}
			if found {
				outDone = true
				rc, _ = strconv.Atoi(strings.TrimSpace(rest))
			}
		case s, ok := <-p.stderr:
			if !ok {
				return 0, errKernelDied
			}
			text, _, found := strings.Cut(s, p.marker)
			if text != "" {
				emit(line{"type": "stderr", "text": text, "timestamp": nowTimestamp()})
			}
			errDone = errDone || found
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return rc, nil
}

func (p *bashProc) close() {
	_ = p.stdin.Close()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second): // a child that left the group still holds a pipe
	}
	_ = os.RemoveAll(p.dir)
}

// shellQuote quotes s as one bash word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
