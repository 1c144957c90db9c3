package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// envdRun runs a shell script as root through envd's process service, as the SDKs do, and
// returns its stdout; a non-zero exit fails the test.
func envdRun(tb testing.TB, sb *sandbox, script string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := processconnect.NewProcessClient(http.DefaultClient, fmt.Sprintf("http://%s", sb.spec.EnvdAddr()))
	req := connect.NewRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}},
	})
	req.Header().Set("Authorization", "Basic cm9vdDo=") // user "root"
	stream, err := c.Start(ctx, req)
	if err != nil {
		tb.Fatalf("envd start %q: %v", script, err)
	}
	defer stream.Close()
	var out, errOut strings.Builder
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			out.Write(d.GetStdout())
			errOut.Write(d.GetStderr())
		}
		if end := ev.GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				tb.Fatalf("envd process %q exited %d: %s %s", script, end.GetExitCode(), end.GetError(), errOut.String())
			}
			return out.String()
		}
	}
	tb.Fatalf("envd process stream ended without an end event: %v", stream.Err())
	return ""
}

// envdInit posts /init with the host's time, as the manager does after a resume.
func envdInit(tb testing.TB, sb *sandbox) {
	tb.Helper()
	now := time.Now().UTC()
	body, _ := json.Marshal(envd.InitRequest{Timestamp: &now})
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(fmt.Sprintf("http://%s/init", sb.spec.EnvdAddr()), "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("envd /init: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("envd /init: status %d", resp.StatusCode)
	}
}

// envdHealthy asserts that envd answers GET /health.
func envdHealthy(tb testing.TB, sb *sandbox) {
	tb.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/health", sb.spec.EnvdAddr()))
	if err != nil {
		tb.Fatalf("envd /health on %s: %v", sb.spec.EnvdAddr(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		tb.Fatalf("envd /health: status %d, want 204", resp.StatusCode)
	}
}

// guestDropCaches is the manager's guest reclaim before Driver.Pause.
func guestDropCaches(tb testing.TB, sb *sandbox) {
	tb.Helper()
	envdRun(tb, sb, "sync && echo 3 > /proc/sys/vm/drop_caches && sync")
}
