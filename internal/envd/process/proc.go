package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

const (
	// readChunk is the largest output event. Bigger chunks mean fewer events per MB of output,
	// so the 256-event stream buffers hold more.
	readChunk = 32 << 10
	// drainGrace is how long output is still read after the process exits. A background child
	// that inherited stdout keeps the pipe open forever; the command's own output is already in
	// the pipe when it exits, so a short wait is enough and `bash -c "server &"` returns at once.
	drainGrace = 200 * time.Millisecond
)

// proc is one process started by envd.
type proc struct {
	pid    uint32
	tag    string
	config *pb.ProcessConfig
	isPTY  bool

	hub  *hub
	done chan struct{} // closed when the end event is published

	inMu  sync.Mutex
	stdin *os.File // pipe write end or PTY master; nil when stdin was not requested
	tty   *os.File // PTY master, nil for pipes

	endMu sync.Mutex
	end   *pb.ProcessEvent_EndEvent

	retiredAt time.Time // guarded by Service.mu
}

// startSpec is everything needed to start a process.
type startSpec struct {
	cmd       *exec.Cmd
	config    *pb.ProcessConfig
	tag       string
	pty       *pb.PTY
	openStdin bool
	stall     time.Duration
}

// launch starts the process and its output readers. The returned subscriber was registered
// before the process started, so the caller's stream misses no output.
func launch(st starter, spec startSpec, lifetime context.Context) (*proc, *subscriber, error) {
	p := &proc{
		tag:    spec.tag,
		config: spec.config,
		isPTY:  spec.pty != nil,
		hub:    newHub(spec.stall),
		done:   make(chan struct{}),
	}
	sub, _ := p.hub.subscribe()

	var (
		readers         []*os.File
		kinds           []func([]byte) *pb.ProcessEvent_DataEvent
		closeAfterStart []*os.File
	)
	cmd := spec.cmd
	if spec.pty != nil {
		master, slave, err := pty.Open()
		if err != nil {
			return nil, nil, fmt.Errorf("open pty: %w", err)
		}
		if err := pty.Setsize(master, winsize(spec.pty)); err != nil {
			master.Close()
			slave.Close()
			return nil, nil, fmt.Errorf("set pty size: %w", err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		p.tty, p.stdin = master, master
		readers = append(readers, master)
		kinds = append(kinds, func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Pty{Pty: b}}
		})
		closeAfterStart = append(closeAfterStart, slave)
	} else {
		cmd.SysProcAttr.Setpgid = true
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("stdout pipe: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeAll(outR, outW)
			return nil, nil, fmt.Errorf("stderr pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = outW, errW
		readers = append(readers, outR, errR)
		kinds = append(kinds,
			func(b []byte) *pb.ProcessEvent_DataEvent {
				return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stdout{Stdout: b}}
			},
			func(b []byte) *pb.ProcessEvent_DataEvent {
				return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stderr{Stderr: b}}
			})
		closeAfterStart = append(closeAfterStart, outW, errW)
		if spec.openStdin {
			inR, inW, err := os.Pipe()
			if err != nil {
				closeAll(append(readers, closeAfterStart...)...)
				return nil, nil, fmt.Errorf("stdin pipe: %w", err)
			}
			cmd.Stdin = inR
			p.stdin = inW
			closeAfterStart = append(closeAfterStart, inR)
		}
		// With stdin off, exec gives the process /dev/null.
	}

	exited, err := st.start(cmd)
	closeAll(closeAfterStart...)
	if err != nil {
		closeAll(readers...)
		if p.stdin != nil && p.stdin != p.tty {
			p.stdin.Close()
		}
		return nil, nil, err
	}
	p.pid = uint32(cmd.Process.Pid)

	var readersDone sync.WaitGroup
	for i, r := range readers {
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			p.pump(r, kinds[i])
		}()
	}
	go p.supervise(exited, readers, &readersDone, lifetime)
	return p, sub, nil
}

// pump publishes a reader's output until EOF, error or its read deadline.
func (p *proc) pump(r *os.File, kind func([]byte) *pb.ProcessEvent_DataEvent) {
	for {
		buf := make([]byte, readChunk)
		n, err := r.Read(buf)
		if n > 0 {
			p.hub.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: kind(buf[:n])}})
		}
		if err != nil {
			return
		}
	}
}

// supervise waits for the exit, kills the process group when its lifetime ends, drains the
// output and publishes the end event.
func (p *proc) supervise(exited <-chan exitStatus, readers []*os.File, readersDone *sync.WaitGroup, lifetime context.Context) {
	var st exitStatus
	var killedByDeadline bool
	select {
	case st = <-exited:
	case <-lifetime.Done():
		killedByDeadline = true
		p.killGroup(unix.SIGKILL)
		st = <-exited
	}

	// Stop waiting for output once the process is gone: data already in the pipe is still read.
	deadline := time.Now().Add(drainGrace)
	for _, r := range readers {
		_ = r.SetReadDeadline(deadline)
	}
	readersDone.Wait()
	closeAll(readers...)
	p.inMu.Lock()
	if p.stdin != nil && p.stdin != p.tty {
		p.stdin.Close()
	}
	p.stdin = nil
	p.inMu.Unlock()

	end := &pb.ProcessEvent_EndEvent{}
	if st.err != nil {
		end.ExitCode = -1
		end.Status = "unknown"
		end.Error = proto.String(fmt.Sprintf("wait for process: %v", st.err))
	} else {
		end.ExitCode, end.Exited, end.Status = describe(st.ws)
	}
	if killedByDeadline {
		end.Error = proto.String("process killed: its Connect-Timeout-Ms deadline passed")
	}
	p.endMu.Lock()
	p.end = end
	p.endMu.Unlock()
	p.hub.finish(end)
	close(p.done)
}

// ended returns the end event, or nil while the process runs.
func (p *proc) ended() *pb.ProcessEvent_EndEvent {
	p.endMu.Lock()
	defer p.endMu.Unlock()
	return p.end
}

// killGroup signals the process's whole group, so children of `bash -c` go too.
func (p *proc) killGroup(sig unix.Signal) error {
	err := unix.Kill(-int(p.pid), sig)
	if errors.Is(err, unix.ESRCH) {
		// Not a group leader (it never got that far): signal the process alone.
		err = unix.Kill(int(p.pid), sig)
	}
	return err
}

// writeInput writes to the process's stdin or PTY, giving up at ctx's deadline so a process
// that never reads cannot hang the caller.
func (p *proc) writeInput(ctx context.Context, data []byte, toPTY bool) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	switch {
	case p.stdin == nil && p.ended() != nil:
		return errProcessEnded
	case toPTY && p.tty == nil:
		return errNotPTY
	case !toPTY && p.tty != nil:
		return errIsPTY
	case p.stdin == nil:
		return errStdinClosed
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(30 * time.Second)
	}
	_ = p.stdin.SetWriteDeadline(dl)
	defer p.stdin.SetWriteDeadline(time.Time{})
	_, err := p.stdin.Write(data)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("process is not reading its input: %w", err)
	}
	if errors.Is(err, syscall.EPIPE) {
		return errStdinClosed
	}
	return err
}

// closeStdin closes a pipe stdin so the process reads EOF.
func (p *proc) closeStdin() error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.tty != nil {
		return errIsPTY
	}
	if p.stdin == nil {
		return errStdinClosed
	}
	err := p.stdin.Close()
	p.stdin = nil
	return err
}

func (p *proc) resize(size *pb.PTY) error {
	if p.tty == nil {
		return errNotPTY
	}
	return pty.Setsize(p.tty, winsize(size))
}

func winsize(p *pb.PTY) *pty.Winsize {
	ws := &pty.Winsize{Cols: 80, Rows: 24}
	if s := p.GetSize(); s != nil {
		if s.GetCols() > 0 {
			ws.Cols = uint16(min(s.GetCols(), 0xffff))
		}
		if s.GetRows() > 0 {
			ws.Rows = uint16(min(s.GetRows(), 0xffff))
		}
	}
	return ws
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

var (
	errProcessEnded = errors.New("process has already exited")
	errNotPTY       = errors.New("process was not started with a PTY")
	errIsPTY        = errors.New("process runs in a PTY: send input as pty data, and Ctrl-D (0x04) to end it")
	errStdinClosed  = errors.New("process stdin is closed or was not opened: start it with stdin enabled")
)
