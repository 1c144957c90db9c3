package gvisor

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/hearthsh/hearth/internal/gen/filesystem"
	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// basicAs is the header the E2B SDKs name the acting user with.
func basicAs(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// envdFiles sends one /files request as user and returns the status and body.
func envdFiles(t testing.TB, sb *sandbox, method, path, user string, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := fmt.Sprintf("http://%s/files?%s", sb.spec.EnvdAddr(), url.Values{"path": {path}}.Encode())
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", basicAs(user))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /files?path=%s as %s: %v", method, path, user, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// Under gVisor, which has no setfsuid, envd must still act as the user for real: the kernel
// refuses the user root's files through /files and the filesystem RPCs, and what the user
// writes is theirs. As root both work, and a command run as the user has the user's uid.
func TestEnvdActsAsUserUnderGVisor(t *testing.T) {
	d := testDriver(t, CreateCold)
	sb := create(t, d, 1, 512)
	execIn(t, d, sb.spec.ID, "/bin/sh", "-c", "mkdir -p /root/private && echo s > /root/private/f && chmod 700 /root/private /root")
	fs := filesystemconnect.NewFilesystemClient(http.DefaultClient, fmt.Sprintf("http://%s", sb.spec.EnvdAddr()))
	stat := func(user, path string) error { return callAs(user, fs.Stat, &fspb.StatRequest{Path: path}) }
	list := func(user, path string) error { return callAs(user, fs.ListDir, &fspb.ListDirRequest{Path: path}) }
	mkdir := func(user, path string) error { return callAs(user, fs.MakeDir, &fspb.MakeDirRequest{Path: path}) }

	t.Run("user is denied root's files", func(t *testing.T) {
		if status, body := envdFiles(t, sb, http.MethodGet, "/etc/shadow", "user", nil); status != http.StatusForbidden {
			t.Errorf("GET /etc/shadow as user: %d %s, want 403", status, body)
		}
		for name, err := range map[string]error{
			"stat /root/private/f":  stat("user", "/root/private/f"),
			"list /root/private":    list("user", "/root/private"),
			"make /root/private/d":  mkdir("user", "/root/private/d"),
			"make /etc/hearth-user": mkdir("user", "/etc/hearth-user"),
		} {
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("%s as user: %v, want PermissionDenied", name, err)
			}
		}
		if status, body := envdFiles(t, sb, http.MethodPost, "/etc/hearth-user", "user", []byte("x")); status != http.StatusForbidden {
			t.Errorf("POST /etc/hearth-user as user: %d %s, want 403", status, body)
		}
	})
	t.Run("user's writes are theirs", func(t *testing.T) {
		if status, body := envdFiles(t, sb, http.MethodPost, "/home/user/x", "user", []byte("mine")); status != http.StatusOK {
			t.Fatalf("POST /home/user/x as user: %d %s", status, body)
		}
		if err := mkdir("user", "/home/user/d1/d2"); err != nil {
			t.Fatalf("make /home/user/d1/d2 as user: %v", err)
		}
		if got := execIn(t, d, sb.spec.ID, "stat", "-c", "%u:%g", "/home/user/x", "/home/user/d1", "/home/user/d1/d2"); got != "1000:1000\n1000:1000\n1000:1000" {
			t.Errorf("owners of what user wrote: %q, want 1000:1000 each", got)
		}
	})
	t.Run("root reads and writes anything", func(t *testing.T) {
		if status, body := envdFiles(t, sb, http.MethodGet, "/etc/shadow", "root", nil); status != http.StatusOK || body == "" {
			t.Errorf("GET /etc/shadow as root: %d %q", status, body)
		}
		if err := list("root", "/root/private"); err != nil {
			t.Errorf("list /root/private as root: %v", err)
		}
		if status, body := envdFiles(t, sb, http.MethodPost, "/root/private/new", "root", []byte("r")); status != http.StatusOK {
			t.Errorf("POST /root/private/new as root: %d %s", status, body)
		}
	})
	t.Run("commands as user run with the user's uid", func(t *testing.T) {
		if got := envdOutput(t, sb, "user", "id -u; id -g; cat /etc/shadow >/dev/null 2>&1 || echo denied"); got != "1000\n1000\ndenied\n" {
			t.Errorf("command as user printed %q", got)
		}
	})
}

// callAs makes one unary envd RPC as user.
func callAs[Req, Res any](user string, call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", basicAs(user))
	_, err := call(ctx, req)
	return err
}

// envdOutput runs a shell script as user through envd's process service and returns stdout.
func envdOutput(t testing.TB, sb *sandbox, user, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := processconnect.NewProcessClient(http.DefaultClient, fmt.Sprintf("http://%s", sb.spec.EnvdAddr()))
	req := connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}}})
	req.Header().Set("Authorization", basicAs(user))
	stream, err := c.Start(ctx, req)
	if err != nil {
		t.Fatalf("envd start as %s: %v", user, err)
	}
	defer stream.Close()
	var out bytes.Buffer
	for stream.Receive() {
		out.Write(stream.Msg().GetEvent().GetData().GetStdout())
		if stream.Msg().GetEvent().GetEnd() != nil {
			return out.String()
		}
	}
	t.Fatalf("envd process stream ended without an end event: %v", stream.Err())
	return ""
}

// BenchmarkEnvdDownloadAsUser measures GET /files of a small file as user in a real gVisor
// sandbox: the credential switch is on every request's path. Compare envds with
// HEARTH_TEST_ENVD.
func BenchmarkEnvdDownloadAsUser(b *testing.B) {
	d := testDriver(b, CreateCold)
	sb := create(b, d, 1, 512)
	if status, body := envdFiles(b, sb, http.MethodPost, "/home/user/small", "user", bytes.Repeat([]byte("x"), 1024)); status != http.StatusOK {
		b.Fatalf("upload: %d %s", status, body)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if status, body := envdFiles(b, sb, http.MethodGet, "/home/user/small", "user", nil); status != http.StatusOK {
			b.Fatalf("download: %d %s", status, body)
		}
	}
}
