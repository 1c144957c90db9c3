package template

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTar(t *testing.T, gz bool, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw *gzip.Writer
	var tw *tar.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestCopyArchiveHostile feeds archives that try to write outside the root filesystem: each
// must fail, and nothing may appear outside the rootfs.
func TestCopyArchiveHostile(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		entries []tarEntry
		// prepare runs on the fresh rootfs before the copy (what an earlier RUN step left).
		prepare func(t *testing.T, rootfs, outside string)
		wantErr string
	}{
		{name: "dot-dot entry", src: "*", entries: []tarEntry{{name: "../escape", body: "x"}}, wantErr: "not a relative path"},
		{name: "nested dot-dot", src: "*", entries: []tarEntry{{name: "a/../../escape", body: "x"}}, wantErr: "not a relative path"},
		{name: "absolute entry", src: "*", entries: []tarEntry{{name: "/escape", body: "x"}}, wantErr: "not a relative path"},
		{name: "write through own symlink", src: "*", entries: []tarEntry{
			{name: "l", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "l/escape", body: "x"},
		}, wantErr: "beneath"},
		{name: "write through own dir symlink, deeper", src: "*", entries: []tarEntry{
			{name: "d", typ: tar.TypeDir, mode: 0o755},
			{name: "d/l", typ: tar.TypeSymlink, link: "/"},
			{name: "d/l/x/escape", body: "x"},
		}, wantErr: "beneath"},
		{name: "hard link", src: "*", entries: []tarEntry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, wantErr: "hard links"},
		{name: "device node", src: "*", entries: []tarEntry{{name: "dev", typ: tar.TypeChar}}, wantErr: "not supported"},
		{name: "fifo", src: "*", entries: []tarEntry{{name: "p", typ: tar.TypeFifo}}, wantErr: "not supported"},
		{name: "source escapes context", src: "../x", entries: []tarEntry{{name: "x", body: "x"}}, wantErr: "inside the build context"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rootfs, outside := filepath.Join(dir, "rootfs"), filepath.Join(dir, "outside")
			for _, d := range []string{rootfs, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for i := range c.entries {
				c.entries[i].link = strings.ReplaceAll(c.entries[i].link, "OUTSIDE", outside)
			}
			err := CopyArchive(bytes.NewReader(makeTar(t, true, c.entries...)), rootfs, CopyOptions{Src: c.src, Dest: "/app", UID: os.Getuid(), GID: os.Getgid()})
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("copy: got %v, want an error containing %q", err, c.wantErr)
			}
			assertEmpty(t, outside)
			assertNoEscape(t, dir)
		})
	}
}

// TestCopyArchiveRootfsSymlinks: symlinks that an earlier step planted in the rootfs are
// resolved inside the rootfs, never on the host.
func TestCopyArchiveRootfsSymlinks(t *testing.T) {
	dir := t.TempDir()
	rootfs, outside := filepath.Join(dir, "rootfs"), filepath.Join(dir, "outside")
	for _, d := range []string{rootfs, outside, filepath.Join(rootfs, "etc")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// /app → the host's "outside" directory by absolute path, and /up → ../../outside.
	if err := os.Symlink(outside, filepath.Join(rootfs, "app")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../outside", filepath.Join(rootfs, "up")); err != nil {
		t.Fatal(err)
	}
	// /etc/target → a file name: a file copied onto it must replace the link, not write through it.
	if err := os.Symlink(filepath.Join(outside, "victim"), filepath.Join(rootfs, "etc", "target")); err != nil {
		t.Fatal(err)
	}
	// What the links point at, seen from inside the rootfs.
	for _, d := range []string{filepath.Join(rootfs, outside), filepath.Join(rootfs, "outside")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/nowhere", filepath.Join(rootfs, "dangling")); err != nil {
		t.Fatal(err)
	}
	tarball := makeTar(t, false, tarEntry{name: "f.txt", body: "hello"})
	if err := CopyArchive(bytes.NewReader(tarball), rootfs, CopyOptions{Src: "f.txt", Dest: "/dangling/f.txt", UID: os.Getuid(), GID: os.Getgid()}); err == nil {
		t.Fatal("copy beneath a dangling symlink: no error")
	}
	for _, dest := range []string{"/app/f.txt", "/up/f.txt", "/etc/target"} {
		if err := CopyArchive(bytes.NewReader(tarball), rootfs, CopyOptions{Src: "f.txt", Dest: dest, UID: os.Getuid(), GID: os.Getgid()}); err != nil {
			t.Fatalf("copy to %s: %v", dest, err)
		}
	}
	assertEmpty(t, outside)
	// The absolute link resolves to <rootfs><outside>, inside the rootfs.
	if b, err := os.ReadFile(filepath.Join(rootfs, outside, "f.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("copy through /app: got %q, %v; want it at %s inside the rootfs", b, err, outside)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "outside", "f.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("copy through /up: got %q, %v; want it at /outside inside the rootfs", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(rootfs, "etc", "target")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("/etc/target: %v %v, want a regular file that replaced the link", fi, err)
	}
}

// TestCopyArchiveSemantics covers what the SDK's archives hold: COPY's file, directory and
// symlink cases, owners and modes.
func TestCopyArchiveSemantics(t *testing.T) {
	tarball := makeTar(t, true,
		tarEntry{name: "folder/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "folder/test.txt", body: "This is a test file.", mode: 0o640},
		tarEntry{name: "folder/sub/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "folder/sub/run.sh", body: "#!/bin/sh\n", mode: 0o755},
		tarEntry{name: "folder/symlink.txt", typ: tar.TypeSymlink, link: "test.txt"},
		tarEntry{name: "folder/abs.txt", typ: tar.TypeSymlink, link: "/etc/hostname"},
		tarEntry{name: "folder/dangling.txt", typ: tar.TypeSymlink, link: "nothing-here"},
	)
	type want struct {
		path, body, link string
		mode             os.FileMode
	}
	cases := []struct {
		name string
		o    CopyOptions
		want []want
		err  string
	}{
		{name: "directory contents merge into the target", o: CopyOptions{Src: "folder/*", Dest: "/home/user/folder"}, want: []want{
			{path: "/home/user/folder/test.txt", body: "This is a test file.", mode: 0o640},
			{path: "/home/user/folder/sub/run.sh", body: "#!/bin/sh\n", mode: 0o755},
			{path: "/home/user/folder/symlink.txt", link: "test.txt"},
			{path: "/home/user/folder/abs.txt", link: "/etc/hostname"},
			{path: "/home/user/folder/dangling.txt", link: "nothing-here"},
		}},
		{name: "a file goes to the exact target", o: CopyOptions{Src: "folder/test.txt", Dest: "/opt/renamed.txt"}, want: []want{
			{path: "/opt/renamed.txt", body: "This is a test file.", mode: 0o640},
		}},
		{name: "a file into a directory", o: CopyOptions{Src: "folder/test.txt", Dest: "/opt/"}, want: []want{
			{path: "/opt/test.txt", body: "This is a test file.", mode: 0o640},
		}},
		{name: "mode replaces permissions", o: CopyOptions{Src: "folder/test.txt", Dest: "/x.txt", Mode: 0o600}, want: []want{
			{path: "/x.txt", body: "This is a test file.", mode: 0o600},
		}},
		{name: "missing source", o: CopyOptions{Src: "nope/*", Dest: "/x"}, err: "source path does not exist: nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rootfs := t.TempDir()
			c.o.UID, c.o.GID = os.Getuid(), os.Getgid()
			err := CopyArchive(bytes.NewReader(tarball), rootfs, c.o)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				p := filepath.Join(rootfs, w.path)
				if w.link != "" {
					if l, err := os.Readlink(p); err != nil || l != w.link {
						t.Errorf("%s: link %q, %v; want %q", w.path, l, err, w.link)
					}
					continue
				}
				b, err := os.ReadFile(p)
				if err != nil || string(b) != w.body {
					t.Errorf("%s: %q, %v; want %q", w.path, b, err, w.body)
					continue
				}
				if fi, _ := os.Stat(p); fi.Mode().Perm() != w.mode {
					t.Errorf("%s: mode %v, want %v", w.path, fi.Mode().Perm(), w.mode)
				}
			}
		})
	}
}

func TestSourcePrefix(t *testing.T) {
	for src, want := range map[string]string{"folder/*": "folder", "*.txt": ".", "a/b.txt": "a/b.txt", "./a/**/x": "a", "dir": "dir"} {
		if got, err := sourcePrefix(src); err != nil || got != want {
			t.Errorf("sourcePrefix(%q) = %q, %v; want %q", src, got, err, want)
		}
	}
	for _, src := range []string{"../a", "/etc/*"} {
		if _, err := sourcePrefix(src); err == nil {
			t.Errorf("sourcePrefix(%q): no error", src)
		}
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("%s: %d entries written outside the rootfs (%s)", dir, len(ents), ents[0].Name())
	}
}

// assertNoEscape checks nothing named "escape" exists anywhere under dir but inside rootfs.
func assertNoEscape(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "escape" && !strings.HasPrefix(p, filepath.Join(dir, "rootfs")+"/") {
			t.Errorf("%s written outside the rootfs", p)
		}
		return nil
	})
	if _, err := os.Lstat("/escape"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/escape exists on the host")
	}
}
