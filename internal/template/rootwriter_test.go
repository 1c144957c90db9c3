package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestArchiveWritersShareRules runs the same archives through both writers of hostile tar
// into a root filesystem, a COPY step's (CopyArchive) and an image layer's (layerWriter), and
// checks the rules they share (nothing lands outside the rootfs, the rootfs's own symlinks
// resolve inside it, the archive's own symlinks are never written through, link text is
// kept) and the ones that differ (owners and modes come from the step or from the archive;
// hard links and absolute names are a layer's only; a layer skips device nodes, a COPY
// refuses them).
func TestArchiveWritersShareRules(t *testing.T) {
	type ent struct {
		h    tar.Header
		body string
	}
	file := func(name string, mode int64, uid, gid int) ent {
		return ent{h: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Uid: uid, Gid: gid, Size: 2}, body: "hi"}
	}
	link := func(typ byte, name, to string) ent {
		return ent{h: tar.Header{Name: name, Typeflag: typ, Linkname: to, Mode: 0o777, Uid: 7, Gid: 8}}
	}
	stat := func(t *testing.T, p string) *syscall.Stat_t {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t)
	}
	const stepUID, stepGID = 1000, 1001
	for _, c := range []struct {
		name string
		// setup prepares the rootfs; outside is a directory next to it.
		setup   func(t *testing.T, rootfs, outside string)
		entries []ent
		// copyRefused and layerRefused: the writer must fail with ErrHostileArchive.
		copyRefused, layerRefused bool
		check                     func(t *testing.T, rootfs, outside string, layer bool)
	}{
		{name: "dot-dot name", entries: []ent{file("../pwned", 0o644, 0, 0)}, copyRefused: true, layerRefused: true},
		{name: "absolute name", entries: []ent{file("/etc/x", 0o644, 0, 0)}, copyRefused: true,
			check: func(t *testing.T, rootfs, _ string, layer bool) {
				if _, err := os.Stat(filepath.Join(rootfs, "etc/x")); err != nil {
					t.Fatalf("a layer's absolute name is not inside the rootfs: %v", err)
				}
			}},
		{name: "through its own symlink", entries: []ent{link(tar.TypeSymlink, "l", "/"), file("l/pwned", 0o644, 0, 0)},
			copyRefused: true, layerRefused: true},
		{name: "through a rootfs symlink",
			setup: func(t *testing.T, rootfs, outside string) {
				// The link's target exists both on the host and in the rootfs: the copy
				// must land in the rootfs's.
				if err := os.MkdirAll(filepath.Join(rootfs, outside), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(outside, filepath.Join(rootfs, "esc")); err != nil {
					t.Fatal(err)
				}
			},
			entries: []ent{file("esc/in", 0o644, 0, 0)},
			check: func(t *testing.T, rootfs, outside string, _ bool) {
				if _, err := os.Stat(filepath.Join(rootfs, outside, "in")); err != nil {
					t.Fatalf("the rootfs's symlink did not resolve inside it: %v", err)
				}
			}},
		{name: "hard link inside", entries: []ent{file("a", 0o644, 0, 0), link(tar.TypeLink, "b", "a")}, copyRefused: true,
			check: func(t *testing.T, rootfs, _ string, _ bool) {
				if stat(t, filepath.Join(rootfs, "a")).Ino != stat(t, filepath.Join(rootfs, "b")).Ino {
					t.Fatal("hard link is not the same file")
				}
			}},
		{name: "hard link out", entries: []ent{link(tar.TypeLink, "b", "../../etc/passwd")}, copyRefused: true, layerRefused: true},
		{name: "modes and owners", entries: []ent{file("s", 0o4755, 1234, 5678)},
			check: func(t *testing.T, rootfs, _ string, layer bool) {
				st := stat(t, filepath.Join(rootfs, "s"))
				uid, gid := uint32(stepUID), uint32(stepGID)
				if layer {
					uid, gid = 1234, 5678
				}
				if st.Uid != uid || st.Gid != gid || st.Mode&0o7777 != 0o4755 {
					t.Fatalf("owner %d:%d mode %o, want %d:%d 4755", st.Uid, st.Gid, st.Mode&0o7777, uid, gid)
				}
			}},
		{name: "symlink text kept", entries: []ent{link(tar.TypeSymlink, "abs", "/etc/shadow")},
			check: func(t *testing.T, rootfs, _ string, layer bool) {
				p := filepath.Join(rootfs, "abs")
				if to, err := os.Readlink(p); err != nil || to != "/etc/shadow" {
					t.Fatalf("symlink %q, %v", to, err)
				}
				uid := uint32(stepUID)
				if layer {
					uid = 7
				}
				if st := stat(t, p); st.Uid != uid {
					t.Fatalf("symlink owner %d, want %d", st.Uid, uid)
				}
			}},
		{name: "device node", entries: []ent{{h: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}}},
			copyRefused: true,
			check: func(t *testing.T, rootfs, _ string, _ bool) {
				if _, err := os.Lstat(filepath.Join(rootfs, "null")); !os.IsNotExist(err) {
					t.Fatalf("a layer's device node was made: %v", err)
				}
			}},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range c.entries {
			if err := tw.WriteHeader(&e.h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		for _, layer := range []bool{false, true} {
			kind := "copy"
			if layer {
				kind = "layer"
			}
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				dir := t.TempDir()
				rootfs, outside := filepath.Join(dir, "rootfs"), filepath.Join(dir, "outside")
				for _, d := range []string{rootfs, outside} {
					if err := os.Mkdir(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				if c.setup != nil {
					c.setup(t, rootfs, outside)
				}
				var err error
				refused := c.copyRefused
				if layer {
					refused = c.layerRefused
					w, werr := newLayerWriter(rootfs, 1<<20, 100)
					if werr != nil {
						t.Fatal(werr)
					}
					err = w.apply(context.Background(), bytes.NewReader(buf.Bytes()))
					w.Close()
				} else {
					err = CopyArchive(bytes.NewReader(buf.Bytes()), rootfs, CopyOptions{Src: ".", Dest: "/", UID: stepUID, GID: stepGID})
				}
				if refused != errors.Is(err, ErrHostileArchive) || (!refused && err != nil) {
					t.Fatalf("err %v, want refused=%v", err, refused)
				}
				if ents, _ := os.ReadDir(outside); len(ents) != 0 {
					t.Fatalf("written outside the rootfs: %v", ents)
				}
				if _, err := os.Lstat(filepath.Join(dir, "pwned")); !os.IsNotExist(err) {
					t.Fatal("written next to the rootfs")
				}
				if !refused && c.check != nil {
					c.check(t, rootfs, outside, layer)
				}
			})
		}
	}
}
