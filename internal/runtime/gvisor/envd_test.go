package gvisor

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// envdRun runs a shell script through envd's process service, as the SDKs do, and waits for
// it to end. Processes that must survive pause and resume have to be started this way:
// runsc restore kills every process that `runsc exec` started (and their descendants), since
// their caller can no longer be connected.
func envdRun(t *testing.T, sb *sandbox, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := processconnect.NewProcessClient(http.DefaultClient, fmt.Sprintf("http://%s", sb.spec.EnvdAddr()))
	stream, err := c.Start(ctx, connect.NewRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}},
	}))
	if err != nil {
		t.Fatalf("envd start: %v", err)
	}
	defer stream.Close()
	for stream.Receive() {
		if end := stream.Msg().GetEvent().GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				t.Fatalf("envd process %q exited %d: %s", script, end.GetExitCode(), end.GetError())
			}
			return
		}
	}
	t.Fatalf("envd process stream ended without an end event: %v", stream.Err())
}
