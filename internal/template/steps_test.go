package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAPIBuildSteps runs the E2B step types on a copy of the base template: RUN as the
// default and a given user, ENV, WORKDIR, USER and COPY, then a failing rebuild that must
// report its step and leave the first build in place.
func TestAPIBuildSteps(t *testing.T) {
	base := testTemplate(t, fakeEnvd(t, "steps"))
	data := filepath.Dir(filepath.Dir(base.Dir))
	name := "api-steps-test"
	t.Cleanup(func() { _ = os.RemoveAll(Dir(data, name)) })
	archive := makeTar(t, true,
		tarEntry{name: "folder/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "folder/test.txt", body: "hello from the context", mode: 0o644},
		tarEntry{name: "folder/link.txt", typ: tar.TypeSymlink, link: "test.txt"},
	)
	hash := strings.Repeat("cd", 32)
	var mu sync.Mutex
	var logs []string
	o := APIBuildOptions{
		DataDir: data, Name: name, From: "base",
		Steps: []Step{
			{Type: "RUN", Args: []string{`test "$(whoami)" = user && test "$PWD" = /home/user`}},
			{Type: "RUN", Args: []string{`test "$(whoami)" = root`, "root"}},
			{Type: "ENV", Args: []string{"GREETING", "hi", "BOTH", "${GREETING}-there"}},
			{Type: "WORKDIR", Args: []string{"/app"}},
			{Type: "COPY", Args: []string{"folder/*", "folder", "", ""}, FilesHash: hash},
			{Type: "RUN", Args: []string{`test "$BOTH" = hi-there && test "$(cat folder/link.txt)" = "hello from the context" && test "$(stat -c %U folder/test.txt)" = user && echo step-output`}},
			{Type: "USER", Args: []string{"root"}},
			{Type: "RUN", Args: []string{`test "$(whoami)" = root`}},
		},
		StartCmd: "python3 -m http.server 8000", ReadyCmd: "true",
		Archive: func(h string) (io.ReadCloser, error) {
			if h != hash {
				return nil, fmt.Errorf("unknown hash %s", h)
			}
			return io.NopCloser(bytes.NewReader(archive)), nil
		},
		Log: func(step, level, msg string) {
			mu.Lock()
			logs = append(logs, step+" "+level+" "+msg)
			mu.Unlock()
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tpl, err := APIBuild(ctx, o)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(logs, "\n"))
	}
	if m := tpl.Meta; m.User != "root" || m.Workdir != "/app" || m.Env["BOTH"] != "hi-there" || m.StartCmd != o.StartCmd || m.From != "base" {
		t.Fatalf("meta: %+v", m)
	}
	joined := strings.Join(logs, "\n")
	for _, want := range []string{"base info [base] FROM template base", "6 info [builder 6/8] RUN", "6 info step-output"} {
		if !strings.Contains(joined, want) {
			t.Errorf("log lacks %q:\n%s", want, joined)
		}
	}
	first := tpl.Meta.BuildID

	// A rebuild whose step 2 fails reports step 2 and leaves the first build in place.
	o.Steps = []Step{{Type: "RUN", Args: []string{"true"}}, {Type: "RUN", Args: []string{"exit 3"}}}
	_, err = APIBuild(ctx, o)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "2" || err.Error() != "failed to run command 'exit 3': exit status 3" {
		t.Fatalf("failing build: %v (%#v)", err, se)
	}
	o.Steps = []Step{{Type: "RUN", Args: []string{"whoami", "root123"}}}
	_, err = APIBuild(ctx, o)
	if err == nil || err.Error() != "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'" {
		t.Fatalf("unknown user: %v", err)
	}
	// A failing finalize puts the previous build back too.
	o.Steps = nil
	o.Finalize = func(context.Context, *Template) error { return errors.New("ready command timed out") }
	if _, err := APIBuild(ctx, o); !errors.As(err, &se) || se.Step != PhaseFinalize {
		t.Fatalf("failing finalize: %v", err)
	}
	if cur, err := Open(data, name); err != nil || cur.Meta.BuildID != first {
		t.Fatalf("after failed rebuilds: %+v, %v; want build %s still in place", cur, err, first)
	}
}

// TestAPIBuildConfinement: a RUN step cannot reach the host's devices, processes or root.
func TestAPIBuildConfinement(t *testing.T) {
	base := testTemplate(t, fakeEnvd(t, "confine"))
	data := filepath.Dir(filepath.Dir(base.Dir))
	name := "api-confine-test"
	t.Cleanup(func() { _ = os.RemoveAll(Dir(data, name)) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, c := range []struct{ name, cmd string }{
		{"no host block devices", `! ls /dev | grep -qE '^(sd|nvme|vd|xvd|loop)'`},
		{"own PID namespace", `test "$(ls /proc | grep -cE '^[0-9]+$')" -lt 10`},
		{"no mount", `! mount -t tmpfs x /mnt 2>/dev/null`},
		{"no mknod", `! mknod /tmp/sda b 8 0 2>/dev/null`},
		{"no chroot escape", `! chroot / true 2>/dev/null`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out strings.Builder
			_, err := APIBuild(ctx, APIBuildOptions{DataDir: data, Name: name, From: "base",
				Steps: []Step{{Type: "RUN", Args: []string{c.cmd, "root"}}},
				Log:   func(_, _, m string) { out.WriteString(m + "\n") }})
			if err != nil {
				t.Fatalf("%s: %v\n%s", c.cmd, err, out.String())
			}
		})
	}
}
