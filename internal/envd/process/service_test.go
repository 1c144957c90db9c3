package process

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"

	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// newTestClient serves a process Service over HTTP/2 cleartext on loopback (client streams
// need HTTP/2) and returns a client for it.
func newTestClient(t *testing.T, opts Options) (processconnect.ProcessClient, *Service) {
	t.Helper()
	cur, err := identity.Current()
	if err != nil {
		t.Fatal(err)
	}
	svc := New(sandboxenv.New(cur.Name), slog.New(slog.DiscardHandler), opts)
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(svc))
	srv := httptest.NewUnstartedServer(mux)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = p
	srv.Start()
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	return processconnect.NewProcessClient(hc, srv.URL), svc
}

// result collects what a process stream delivered.
type result struct {
	pid            uint32
	stdout, stderr bytes.Buffer
	pty            bytes.Buffer
	end            *pb.ProcessEvent_EndEvent
}

type eventStream interface {
	Receive() bool
	Err() error
}

func collect[T interface{ GetEvent() *pb.ProcessEvent }](t *testing.T, s interface {
	Receive() bool
	Msg() T
	Err() error
}) result {
	t.Helper()
	var r result
	for s.Receive() {
		ev := s.Msg().GetEvent()
		switch {
		case ev.GetStart() != nil:
			r.pid = ev.GetStart().GetPid()
		case ev.GetData() != nil:
			d := ev.GetData()
			r.stdout.Write(d.GetStdout())
			r.stderr.Write(d.GetStderr())
			r.pty.Write(d.GetPty())
		case ev.GetEnd() != nil:
			r.end = ev.GetEnd()
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return r
}

func bash(script string) *pb.ProcessConfig {
	return &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", script}}
}

func TestStartOutputsAndExit(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	dir := t.TempDir()
	tests := []struct {
		name       string
		req        *pb.StartRequest
		wantStdout string
		wantStderr string
		wantCode   int32
		wantStatus string
	}{
		{"stdout stderr and exit code", &pb.StartRequest{Process: bash("echo out; echo err >&2; exit 3")}, "out\n", "err\n", 3, "exit status 3"},
		{"env vars", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", "echo $FOO-$BAR"}, Envs: map[string]string{"FOO": "x", "BAR": "y z"}}}, "x-y z\n", "", 0, "exit status 0"},
		{"cwd", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/pwd", Cwd: &dir}}, dir + "\n", "", 0, "exit status 0"},
		{"binary output", &pb.StartRequest{Process: bash(`printf '\x00\xff\x01'`)}, "\x00\xff\x01", "", 0, "exit status 0"},
		{"relative cmd resolved on PATH", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "echo", Args: []string{"hi"}}}, "hi\n", "", 0, "exit status 0"},
		{"large output", &pb.StartRequest{Process: bash("head -c 3000000 /dev/zero | tr '\\0' a")}, strings.Repeat("a", 3000000), "", 0, "exit status 0"},
		{"background child keeps stdout open", &pb.StartRequest{Process: bash("sleep 30 & echo started")}, "started\n", "", 0, "exit status 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			stream, err := client.Start(ctx, connect.NewRequest(tt.req))
			if err != nil {
				t.Fatal(err)
			}
			r := collect[*pb.StartResponse](t, stream)
			if r.pid == 0 {
				t.Error("no start event with a pid")
			}
			if got := r.stdout.String(); got != tt.wantStdout {
				t.Errorf("stdout = %.80q (%d bytes), want %.80q (%d bytes)", got, len(got), tt.wantStdout, len(tt.wantStdout))
			}
			if got := r.stderr.String(); got != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", got, tt.wantStderr)
			}
			if r.end == nil {
				t.Fatal("no end event")
			}
			if r.end.GetExitCode() != tt.wantCode || !r.end.GetExited() || r.end.GetStatus() != tt.wantStatus {
				t.Errorf("end = %v, want code %d status %q", r.end, tt.wantCode, tt.wantStatus)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	missing := "/nonexistent/dir"
	tests := []struct {
		name   string
		req    *pb.StartRequest
		header http.Header
		code   connect.Code
	}{
		{"empty cmd", &pb.StartRequest{Process: &pb.ProcessConfig{}}, nil, connect.CodeInvalidArgument},
		{"missing cwd", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true", Cwd: &missing}}, nil, connect.CodeInvalidArgument},
		{"missing binary", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/no/such/binary"}}, nil, connect.CodeNotFound},
		{"unknown user", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}}, basicAuth("no-such-user-hearth"), connect.CodeUnauthenticated},
		{"malformed auth header", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}}, http.Header{"Authorization": {"Bearer x"}}, connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := connect.NewRequest(tt.req)
			for k, v := range tt.header {
				req.Header()[k] = v
			}
			stream, err := client.Start(context.Background(), req)
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			if got := connect.CodeOf(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("error has no message")
			}
		})
	}
}

func basicAuth(user string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))}}
}

func TestStartAsOtherUser(t *testing.T) {
	if !identity.IsRoot() {
		t.Skip("running processes as another user needs root")
	}
	client, _ := newTestClient(t, Options{})
	req := connect.NewRequest(&pb.StartRequest{Process: bash("id -u; echo $HOME $USER")})
	req.Header().Set("Authorization", basicAuth("nobody").Get("Authorization"))
	stream, err := client.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*pb.StartResponse](t, stream)
	nobody, err := identity.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d\n%s nobody\n", nobody.UID, nobody.Home)
	if r.stdout.String() != want {
		t.Fatalf("stdout = %q, want %q", r.stdout.String(), want)
	}
}

func TestProcessOutlivesClientAndConnect(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	file := filepath.Join(t.TempDir(), "done")
	tag := "bg-" + t.Name()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Start(ctx, connect.NewRequest(&pb.StartRequest{
		Process: bash("sleep 0.5; echo late; touch " + file),
		Tag:     &tag,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetEvent().GetStart() == nil {
		t.Fatalf("first event is not start: %v", stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	cancel() // the client goes away; the process must not

	list, err := client.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range list.Msg.GetProcesses() {
		if p.GetPid() == pid && p.GetTag() == tag && p.GetConfig().GetCmd() == "/bin/bash" {
			found = true
		}
	}
	if !found {
		t.Fatalf("List does not show pid %d with tag %q: %v", pid, tag, list.Msg)
	}

	// Reattach by tag and see the rest of the output and the exit.
	cs, err := client.Connect(context.Background(), connect.NewRequest(&pb.ConnectRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*pb.ConnectResponse](t, cs)
	if r.pid != pid || r.stdout.String() != "late\n" || r.end.GetExitCode() != 0 {
		t.Fatalf("connect got pid %d stdout %q end %v", r.pid, r.stdout.String(), r.end)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("process did not finish its work: %v", err)
	}

	// A process that already exited is still reported by pid.
	cs, err = client.Connect(context.Background(), connect.NewRequest(&pb.ConnectRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	r = collect[*pb.ConnectResponse](t, cs)
	if r.pid != pid || r.end == nil || r.end.GetStatus() != "exit status 0" {
		t.Fatalf("connect to exited process: pid %d end %v", r.pid, r.end)
	}

	// Unknown selectors are NotFound.
	for _, sel := range []*pb.ProcessSelector{
		{Selector: &pb.ProcessSelector_Pid{Pid: 999999}},
		{Selector: &pb.ProcessSelector_Tag{Tag: "nope"}},
	} {
		cs, err := client.Connect(context.Background(), connect.NewRequest(&pb.ConnectRequest{Process: sel}))
		if err == nil {
			for cs.Receive() {
			}
			err = cs.Err()
		}
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("connect %v: %v, want not_found", sel, err)
		}
	}
}

// startBackground starts a process and returns its pid once the start event arrives; the
// stream is drained in the background.
func startBackground(t *testing.T, client processconnect.ProcessClient, req *pb.StartRequest) (uint32, <-chan result) {
	return startWatched(t, client, req, &lockedBuffer{})
}

func startWatched(t *testing.T, client processconnect.ProcessClient, req *pb.StartRequest, live *lockedBuffer) (uint32, <-chan result) {
	t.Helper()
	stream, err := client.Start(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no start event: %v", stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	done := make(chan result, 1)
	go func() {
		var r result
		r.pid = pid
		for stream.Receive() {
			ev := stream.Msg().GetEvent()
			r.stdout.Write(ev.GetData().GetStdout())
			r.pty.Write(ev.GetData().GetPty())
			live.Write(ev.GetData().GetPty())
			if ev.GetEnd() != nil {
				r.end = ev.GetEnd()
			}
		}
		done <- r
	}()
	return pid, done
}

// lockedBuffer is PTY output the test can watch while the stream runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
}

func (b *lockedBuffer) Contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

func wait(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("process did not end")
		return result{}
	}
}

func TestStdin(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	on := true
	pid, done := startBackground(t, client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/cat"}, Stdin: &on})
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
	if _, err := client.SendInput(context.Background(), connect.NewRequest(&pb.SendInputRequest{
		Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("one ")}},
	})); err != nil {
		t.Fatal(err)
	}
	si := client.StreamInput(context.Background())
	for _, m := range []*pb.StreamInputRequest{
		{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: sel}}},
		{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("two ")}}}}},
		{Event: &pb.StreamInputRequest_Keepalive{Keepalive: &pb.StreamInputRequest_KeepAlive{}}},
		{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("three")}}}}},
	} {
		if err := si.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := si.CloseAndReceive(); err != nil {
		t.Fatal(err)
	}
	// PTY input to a pipe process is refused.
	_, err := client.SendInput(context.Background(), connect.NewRequest(&pb.SendInputRequest{
		Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte("x")}},
	}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("pty input to pipe process: %v, want failed_precondition", err)
	}
	if _, err := client.CloseStdin(context.Background(), connect.NewRequest(&pb.CloseStdinRequest{Process: sel})); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	if r.stdout.String() != "one two three" || r.end.GetExitCode() != 0 {
		t.Fatalf("cat echoed %q, end %v", r.stdout.String(), r.end)
	}
}

func TestStdinOffGivesEOF(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	off := false
	stream, err := client.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/cat"}, Stdin: &off}))
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*pb.StartResponse](t, stream)
	if r.end.GetExitCode() != 0 {
		t.Fatalf("cat with stdin off did not end cleanly: %v", r.end)
	}
	_, err = client.SendInput(context.Background(), connect.NewRequest(&pb.SendInputRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: r.pid}},
		Input:   &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}},
	}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("input to exited process: %v, want not_found", err)
	}
}

func TestSignalKillsProcessGroup(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	tests := []struct {
		signal     pb.Signal
		wantStatus string
	}{
		{pb.Signal_SIGNAL_SIGKILL, "signal: killed"},
		{pb.Signal_SIGNAL_SIGTERM, "signal: terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.signal.String(), func(t *testing.T) {
			child := filepath.Join(t.TempDir(), "child.pid")
			pid, done := startBackground(t, client, &pb.StartRequest{Process: &pb.ProcessConfig{
				Cmd: "/bin/bash", Args: []string{"-c", "sleep 60 & echo $! > " + child + "; sleep 60"},
			}})
			waitFor(t, func() bool { _, err := os.Stat(child); return err == nil })
			sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
			if _, err := client.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: sel, Signal: tt.signal})); err != nil {
				t.Fatal(err)
			}
			r := wait(t, done)
			if r.end.GetExited() || r.end.GetStatus() != tt.wantStatus || r.end.GetExitCode() != -1 {
				t.Fatalf("end = %v, want status %q", r.end, tt.wantStatus)
			}
			raw, _ := os.ReadFile(child)
			var childPid int
			fmt.Sscan(string(raw), &childPid)
			waitFor(t, func() bool { return !alive(childPid) })
			// Signalling a process that has exited is NotFound.
			_, err := client.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: sel, Signal: tt.signal}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("signal to exited process: %v, want not_found", err)
			}
		})
	}
}

func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnectTimeoutBoundsLifetime(t *testing.T) {
	client, svc := newTestClient(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	stream, err := client.Start(ctx, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"60"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	for stream.Receive() {
	}
	waitFor(t, func() bool { return !alive(int(pid)) })
	waitFor(t, func() bool {
		p, err := svc.find(&pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, true)
		return err == nil && p.ended() != nil
	})
	p, _ := svc.find(&pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, true)
	if end := p.ended(); end.GetStatus() != "signal: killed" || !strings.Contains(end.GetError(), "Connect-Timeout-Ms") {
		t.Fatalf("end = %v, want killed by the deadline", end)
	}
}

func TestPTY(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	live := &lockedBuffer{}
	pid, done := startWatched(t, client, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"--norc", "--noprofile", "-i"}, Envs: map[string]string{"TERM": "xterm-256color", "PS1": "$ "}},
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
	}, live)
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
	send := func(s string) {
		t.Helper()
		if _, err := client.SendInput(context.Background(), connect.NewRequest(&pb.SendInputRequest{
			Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(s)}},
		})); err != nil {
			t.Fatal(err)
		}
	}
	send("stty size; echo $TERM; tty\n")
	waitFor(t, func() bool { return live.Contains("/dev/pts/") })
	if _, err := client.Update(context.Background(), connect.NewRequest(&pb.UpdateRequest{
		Process: sel, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 132, Rows: 40}},
	})); err != nil {
		t.Fatal(err)
	}
	send("stty size\n")
	// Stdin-only operations are refused for PTYs.
	if _, err := client.CloseStdin(context.Background(), connect.NewRequest(&pb.CloseStdinRequest{Process: sel})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("CloseStdin on PTY: %v, want failed_precondition", err)
	}
	send("exit 7\n")
	r := wait(t, done)
	out := r.pty.String()
	for _, want := range []string{"24 80", "xterm-256color", "/dev/pts/", "40 132"} {
		if !strings.Contains(out, want) {
			t.Errorf("pty output lacks %q:\n%s", want, out)
		}
	}
	if r.end.GetExitCode() != 7 {
		t.Errorf("end = %v, want exit 7", r.end)
	}
	// Resizing a pipe process is refused.
	pid2, done2 := startBackground(t, client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"5"}}})
	_, err := client.Update(context.Background(), connect.NewRequest(&pb.UpdateRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid2}}, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 1, Rows: 1}},
	}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("resize of pipe process: %v, want failed_precondition", err)
	}
	client.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid2}}, Signal: pb.Signal_SIGNAL_SIGKILL}))
	wait(t, done2)
}

func TestDuplicateTagRefused(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	tag := "dup"
	pid, done := startBackground(t, client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"5"}}, Tag: &tag})
	stream, err := client.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}, Tag: &tag}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate tag: %v, want already_exists", err)
	}
	client.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, Signal: pb.Signal_SIGNAL_SIGKILL}))
	wait(t, done)
}

func TestKeepalive(t *testing.T) {
	client, _ := newTestClient(t, Options{})
	req := connect.NewRequest(&pb.StartRequest{Process: bash("sleep 2.5")})
	req.Header().Set(keepaliveHeader, "1")
	stream, err := client.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	keepalives := 0
	for stream.Receive() {
		if stream.Msg().GetEvent().GetKeepalive() != nil {
			keepalives++
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if keepalives < 1 {
		t.Fatalf("got %d keepalives in 2.5 s with a 1 s interval", keepalives)
	}
}
