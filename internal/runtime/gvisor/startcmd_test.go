package gvisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartSnapshot: a template with a start command is restored, in cold mode too, from a
// snapshot taken with the command running and its ready command passed, so its server
// answers the first request after Create returns, in every sandbox.
func TestStartSnapshot(t *testing.T) {
	d := testDriver(t, CreateCold)
	tpl := testEnv.Template
	tpl.Name += "-start"
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(d.cfg.SnapshotDir, tpl.Name)) })
	tpl.Version += fmt.Sprintf("-start-%d", time.Now().UnixNano())
	tpl.User, tpl.Workdir, tpl.Env = "root", "/tmp", map[string]string{"GREETING": "hello"}
	tpl.StartCmd = `echo "$GREETING from $(pwd)" > index.html && exec python3 -m http.server 8000`
	tpl.ReadyCmd = `python3 -c "import socket; socket.create_connection(('127.0.0.1', 8000), 1)"`
	for i := range 2 {
		sb := newSpec(t, d, 1, 512)
		sb.spec.Template = tpl
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		err := d.Create(ctx, sb.spec)
		cancel()
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
		res, err := c.Get(fmt.Sprintf("http://%s:8000/index.html", sb.spec.Net.GuestIP))
		if err != nil {
			t.Fatalf("sandbox %d: first request after create: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "hello from /tmp\n" {
			t.Fatalf("sandbox %d: %d %q, want 200 with the start command's file (its env and workdir)", i, res.StatusCode, body)
		}
	}

	for _, c := range []struct{ name, start, ready, want string }{
		{"start command fails", "exit 3", "false", "start command failed: exit status 3"},
		{"ready never passes", "sleep 600", "false", "ready command timed out"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d.cfg.ReadyTimeout = 3 * time.Second
			defer func() { d.cfg.ReadyTimeout = 0 }()
			bad := tpl
			bad.Version += "-" + strings.ReplaceAll(c.name, " ", "-")
			bad.StartCmd, bad.ReadyCmd = c.start, c.ready
			sb := newSpec(t, d, 1, 512)
			sb.spec.Template = bad
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := d.Create(ctx, sb.spec); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("create: %v, want an error with %q", err, c.want)
			}
		})
	}
}
