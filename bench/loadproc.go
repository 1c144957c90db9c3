package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// loadJob is what the parent hands the load generator process.
type loadJob struct {
	ProxyURL string     `json:"proxy_url"`
	ID       string     `json:"id"`
	Guest    string     `json:"guest"`
	Token    string     `json:"token"`
	Domain   string     `json:"domain"`
	Params   loadParams `json:"params"`
}

// loadProc is the load generator running as a child process of the benchmark: its own Go
// runtime, so its garbage collection and scheduling do not stall the PTY client's, and a
// process that a wrapper (taskset, nice, …) can confine for the investigations.
type loadProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	waited chan error
}

// startLoadProc starts `wrap… <this binary> -loadgen JOB`, whose load goes through the
// proxy at proxyURL, and waits until it is loaded.
func startLoadProc(ctx context.Context, t *target, proxyURL string, p loadParams, wrap []string) (*loadProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	job, _ := json.Marshal(loadJob{ProxyURL: proxyURL, ID: t.id, Guest: t.guest, Token: t.token, Domain: t.domain, Params: p})
	argv := append(append([]string(nil), wrap...), self, "-loadgen", string(job))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start load generator %q: %w", strings.Join(wrap, " "), err)
	}
	lp := &loadProc{cmd: cmd, stdin: stdin, lines: make(chan string, 4), waited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lp.lines <- sc.Text()
		}
		close(lp.lines)
		lp.waited <- cmd.Wait()
	}()
	select {
	case l, ok := <-lp.lines:
		if ok && l == "ready" {
			return lp, nil
		}
		lp.kill()
		return nil, fmt.Errorf("load generator did not start (said %q)", l)
	case <-time.After(30 * time.Second):
		lp.kill()
		return nil, fmt.Errorf("load generator not ready within 30 s")
	case <-ctx.Done():
		lp.kill()
		return nil, ctx.Err()
	}
}

// pid is the load generator's process ID (the wrapper's, which execs it).
func (lp *loadProc) pid() int { return lp.cmd.Process.Pid }

// stop ends the load (closing stdin) and returns what it achieved.
func (lp *loadProc) stop() (loadStats, error) {
	lp.stdin.Close()
	var st loadStats
	select {
	case l, ok := <-lp.lines:
		if !ok {
			return st, fmt.Errorf("load generator exited without its figures: %v", <-lp.waited)
		}
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			lp.kill()
			return st, fmt.Errorf("load generator figures %q: %w", l, err)
		}
	case <-time.After(30 * time.Second):
		lp.kill()
		return st, fmt.Errorf("load generator did not stop within 30 s")
	}
	select {
	case <-lp.waited:
	case <-time.After(10 * time.Second):
		lp.kill()
	}
	return st, nil
}

func (lp *loadProc) kill() {
	_ = lp.cmd.Process.Kill()
}

// loadgenMain is the child's side: run the job until stdin closes or its Max passes, print
// "ready" once loaded and the figures as one JSON line at the end.
func loadgenMain(jobJSON string) error {
	var job loadJob
	if err := json.Unmarshal([]byte(jobJSON), &job); err != nil {
		return fmt.Errorf("load job: %w", err)
	}
	proxyBase = job.ProxyURL
	t := &target{id: job.ID, guest: job.Guest, token: job.Token, domain: job.Domain}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	st := runLoad(ctx, t, job.Params, func() { fmt.Println("ready") })
	b, _ := json.Marshal(st)
	fmt.Println(string(b))
	return nil
}
