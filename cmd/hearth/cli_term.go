package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// terminalFd returns w's file descriptor when w is a terminal.
func terminalFd(w any) (int, bool) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// progress prints "msg…" on w when it is a terminal and returns a function that finishes the
// line with "done" or "failed" and the time taken. On a non-terminal it prints nothing, so
// scripts' stderr carries only errors.
func progress(w io.Writer, msg string) func(err error) {
	if _, ok := terminalFd(w); !ok {
		return func(error) {}
	}
	start := time.Now()
	fmt.Fprintf(w, "%s… ", msg)
	return func(err error) {
		d := time.Since(start).Round(10 * time.Millisecond)
		if err != nil {
			fmt.Fprintf(w, "failed after %v\n", d)
			return
		}
		fmt.Fprintf(w, "done in %v\n", d)
	}
}

// progressMin is the size above which cp shows a progress line.
const progressMin = 1 << 20

// transferProgress counts bytes passing through it and redraws one status line on a terminal
// at most ten times a second.
type transferProgress struct {
	w     io.Writer
	name  string
	total int64

	mu    sync.Mutex
	n     int64
	last  time.Time
	start time.Time
}

// newTransferProgress returns nil when no progress should be shown: w is not a terminal or
// the transfer is small.
func newTransferProgress(w io.Writer, name string, total int64) *transferProgress {
	if _, ok := terminalFd(w); !ok || total < progressMin {
		return nil
	}
	return &transferProgress{w: w, name: name, total: total, start: time.Now()}
}

func (p *transferProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(len(b))
	if time.Since(p.last) >= 100*time.Millisecond {
		p.last = time.Now()
		p.draw()
	}
	return len(b), nil
}

func (p *transferProgress) draw() {
	pct := 100 * float64(p.n) / float64(p.total)
	fmt.Fprintf(p.w, "\r%s  %.1f / %.1f MiB  %3.0f%%", p.name, float64(p.n)/(1<<20), float64(p.total)/(1<<20), pct)
}

// finish draws the final state and ends the line.
func (p *transferProgress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
	secs := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "  %.1f MiB/s\n", float64(p.n)/(1<<20)/max(secs, 0.001))
}

// tee wraps r so reads also count towards p (when p is not nil).
func (p *transferProgress) tee(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return io.TeeReader(r, p)
}
