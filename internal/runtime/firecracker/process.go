package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
)

// process is a Firecracker process this driver started and reaps.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, set before done closes
}

// start launches sandbox s's Firecracker in layout l and returns once its API socket
// accepts connections. Its stdout and stderr append to the sandbox dir's log. The process
// is not tied to ctx: it outlives the call that started it.
func (d *Driver) start(ctx context.Context, s runtime.Spec, l layout) (*process, *api.Client, error) {
	out, err := os.OpenFile(filepath.Join(s.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, err
	}
	defer out.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, err
	}
	defer null.Close()
	bin, args := d.command(s, l)
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, out, out
	// Own process group: a terminal's Ctrl-C to the agent must not reach VMs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitSocket(ctx, l.host(apiSock)); err != nil {
		_ = p.kill(context.WithoutCancel(ctx))
		return nil, nil, fmt.Errorf("%w; log: %s", err, runtime.LogTail(filepath.Join(s.Dir, logFile), -1, 12))
	}
	return p, api.New(l.host(apiSock)), nil
}

// waitSocket polls until Firecracker accepts connections on its API socket.
func (p *process) waitSocket(ctx context.Context, path string) error {
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("firecracker exited before serving its API: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("firecracker API socket %s: %w", path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pid is the process ID (Firecracker's own: the jailer and nsenter exec into it).
func (p *process) pid() int { return p.cmd.Process.Pid }

// kill SIGKILLs the process and waits until it is reaped. Nothing of a VM is worth a
// graceful stop: its state is either in a snapshot already or being thrown away.
func (p *process) kill(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill firecracker %d: %w", p.pid(), err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("firecracker %d did not exit after SIGKILL: %w", p.pid(), ctx.Err())
	}
}

// waitEnvd waits for envd in the VM, and says why Firecracker died if it did first.
func (p *process) waitEnvd(ctx context.Context, addr netip.AddrPort) error {
	err := runtime.WaitEnvd(ctx, addr, p.done)
	if errors.Is(err, runtime.ErrExited) {
		return fmt.Errorf("firecracker exited while waiting for envd at %s: %v", addr, p.err)
	}
	return err
}
