package artifacts

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTreeRoundTrip: a tree packed and unpacked elsewhere has the same entries with the same
// owners, modes, times, link targets and contents, and packing is deterministic.
func TestTreeRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners and device nodes")
	}
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "etc", "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	os.WriteFile(filepath.Join(src, "su"), []byte("#!setuid"), 0o755)
	os.Chmod(filepath.Join(src, "su"), 0o4755)
	os.MkdirAll(filepath.Join(src, "home", "user"), 0o750)
	os.Chown(filepath.Join(src, "home", "user"), 1000, 1000)
	os.WriteFile(filepath.Join(src, "home", "user", ".bashrc"), []byte("PS1=x"), 0o600)
	os.Chown(filepath.Join(src, "home", "user", ".bashrc"), 1000, 1000)
	os.Symlink("/etc/hosts", filepath.Join(src, "abs-link"))
	os.Symlink("etc", filepath.Join(src, "rel-link"))
	os.Link(filepath.Join(src, "etc", "hosts"), filepath.Join(src, "etc", "hosts.hard"))
	os.MkdirAll(filepath.Join(src, "dev"), 0o755)
	if err := unix.Mknod(filepath.Join(src, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "etc", "hosts"), old, old)
	os.Chtimes(filepath.Join(src, "etc"), old, old)

	var a, b bytes.Buffer
	if err := PackTree(&a, src); err != nil {
		t.Fatal(err)
	}
	PackTree(&b, src)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two packs of one tree differ")
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if err := UnpackTree(bytes.NewReader(a.Bytes()), dst); err != nil {
		t.Fatal(err)
	}
	if got, want := describeTree(t, dst), describeTree(t, src); got != want {
		t.Fatalf("unpacked tree differs:\n got %s\nwant %s", got, want)
	}
	var sa, sb syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "etc", "hosts"), &sa)
	syscall.Stat(filepath.Join(dst, "etc", "hosts.hard"), &sb)
	if sa.Ino != sb.Ino {
		t.Error("hard link unpacked as a copy")
	}
}

func describeTree(t *testing.T, root string) string {
	var sb strings.Builder
	err := walkSorted(root, "", func(rel string, fi fs.FileInfo) error {
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&sb, "%s %s %d:%d %s", rel, fi.Mode(), st.Uid, st.Gid, fi.ModTime().Truncate(time.Second).UTC().Format(time.RFC3339))
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(filepath.Join(root, rel))
			sb.WriteString(" -> " + l)
		} else if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(filepath.Join(root, rel))
			sb.WriteString(" " + string(c))
		} else if fi.Mode()&fs.ModeDevice != 0 {
			fmt.Fprintf(&sb, " dev %d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		sb.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// TestUnpackRefusesEscapes: entries that leave the root, or go through a symlink the archive
// made, fail the unpack and write nothing outside it.
func TestUnpackRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"dot-dot", []tar.Header{{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"absolute", []tar.Header{{Name: filepath.Join(outside, "escaped"), Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"through a symlink", []tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"hard link out", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				h.Uid, h.Gid = os.Getuid(), os.Getgid()
				tw.WriteHeader(&h)
			}
			tw.Close()
			root := filepath.Join(t.TempDir(), "root")
			if err := UnpackTree(&buf, root); err == nil {
				t.Fatal("unpack succeeded")
			}
			if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
				t.Fatal("wrote outside the root")
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escaped")); err == nil {
				t.Fatal("wrote beside the root")
			}
		})
	}
}
