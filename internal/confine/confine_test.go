package confine

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// listen serves a Unix socket at path that counts the connections it accepts.
func listen(t *testing.T, path string) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	return &n
}

func TestDial(t *testing.T) {
	// Short paths: a Unix socket path is limited to 108 bytes.
	root, err := os.MkdirTemp("", "cf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	outside := filepath.Join(root, "outside")
	shared := filepath.Join(root, "shared") // the directory the sandbox writes into
	for _, d := range []string{outside, shared, filepath.Join(shared, "sub")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	host := listen(t, filepath.Join(outside, "host.sock")) // the socket an attacker wants
	good := listen(t, filepath.Join(shared, "good.sock"))
	subGood := listen(t, filepath.Join(outside, "in.sock"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(outside, "host.sock"), filepath.Join(shared, "link.sock")))
	must(os.Symlink("../outside/host.sock", filepath.Join(shared, "rel.sock")))
	must(os.Symlink(outside, filepath.Join(shared, "dirlink")))
	must(os.WriteFile(filepath.Join(shared, "file"), nil, 0o600))
	must(os.Symlink(shared, filepath.Join(root, "shared-link")))

	d := &net.Dialer{Timeout: time.Second}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		dir  string
		sock string
		ok   bool
		is   error
	}{
		{name: "socket", dir: shared, sock: "good.sock", ok: true},
		{name: "symlink to host socket", dir: shared, sock: "link.sock"},
		{name: "relative symlink", dir: shared, sock: "rel.sock"},
		{name: "symlink in a parent", dir: shared, sock: "dirlink/in.sock"},
		{name: "dot-dot escape", dir: shared, sock: "../outside/host.sock"},
		{name: "dot-dot inside a subdir", dir: shared, sock: "sub/../../outside/host.sock"},
		{name: "absolute path", dir: shared, sock: filepath.Join(outside, "host.sock")},
		{name: "regular file", dir: shared, sock: "file", is: ErrNotSocket},
		{name: "missing", dir: shared, sock: "nothing.sock", is: fs.ErrNotExist},
		{name: "directory", dir: shared, sock: "sub", is: ErrNotSocket},
		{name: "the directory itself a symlink", dir: filepath.Join(root, "shared-link"), sock: "good.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := OpenDir(tc.dir)
			var c net.Conn
			if err == nil {
				defer dir.Close()
				c, err = DialAt(ctx, d, dir, tc.sock)
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				buf := make([]byte, 2)
				if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
					t.Fatalf("read %q, %v", buf, err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
		})
	}
	if n := host.Load() + subGood.Load(); n != 0 {
		t.Fatalf("%d connections reached sockets outside the shared directory", n)
	}
	if good.Load() != 1 {
		t.Fatalf("good socket got %d connections, want 1", good.Load())
	}
	// Dial splits a full path the same way.
	if c, err := Dial(ctx, d, filepath.Join(shared, "link.sock")); err == nil {
		c.Close()
		t.Fatal("Dial followed a symlink")
	}
	if c, err := Dial(ctx, d, filepath.Join(shared, "good.sock")); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), nil, 0o600)
	os.Symlink("/", filepath.Join(dir, "b"))
	os.Mkdir(filepath.Join(dir, "c"), 0o700)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ents, err := ReadDir(d, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]fs.FileMode{}
	for _, e := range ents {
		got[e.Name] = e.Type
	}
	if len(got) != 3 || got["a"] != 0 || got["b"] != fs.ModeSymlink || got["c"] != fs.ModeDir {
		t.Fatalf("entries %v", got)
	}
	if _, err := ReadDir(d, 2); err == nil {
		t.Fatal("ReadDir over its bound succeeded")
	}
}
