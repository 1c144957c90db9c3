package filesystem

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
)

// unprivileged is the account permission tests act as; it exists on every Debian system.
const unprivileged = "nobody"

type harness struct {
	env    *sandboxenv.Env
	svc    *Service
	client filesystemconnect.FilesystemClient
	json   filesystemconnect.FilesystemClient // Connect JSON, as the JS SDK speaks
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := sandboxenv.New("root")
	svc := New(env, slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(svc))
	srv := httptest.NewServer(mux) // loopback only
	t.Cleanup(func() {
		srv.Close()
		svc.Close()
	})
	return &harness{
		env:    env,
		svc:    svc,
		client: filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL),
		json:   filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL, connect.WithProtoJSON()),
	}
}

// req builds a request acting as user ("" for the default user), as the SDK does with a
// Basic auth header.
func req[T any](msg *T, user string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if user != "" {
		r.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return r
}

// sharedDir returns a temp directory every user may write into, for tests that act as an
// unprivileged user (t.TempDir is private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	if !identity.IsRoot() {
		t.Skip("needs root to act as other users")
	}
}

func lookup(t *testing.T, name string) identity.User {
	t.Helper()
	u, err := identity.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeUnknown
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// mountTiny mounts a tmpfs with the given options in a temp directory, to provoke ENOSPC.
func mountTiny(t *testing.T, opts string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
