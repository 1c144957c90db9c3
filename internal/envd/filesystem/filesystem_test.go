package filesystem

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

func TestStat(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := sharedDir(t)
	h.env.SetDefaultWorkdir(dir)
	file := filepath.Join(dir, "a.txt")
	writeFile(t, file, "hello", 0o644)
	if err := unix.Setxattr(file, MetadataPrefix+"owner-team", []byte("infra"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		path     string
		user     string
		code     connect.Code
		wantType rpc.FileType
		wantPath string
		check    func(t *testing.T, e *rpc.EntryInfo)
	}{
		{name: "file", path: file, wantType: rpc.FileType_FILE_TYPE_FILE, wantPath: file, check: func(t *testing.T, e *rpc.EntryInfo) {
			if e.GetName() != "a.txt" || e.GetSize() != 5 || e.GetMode() != 0o644 || e.GetPermissions() != "-rw-r--r--" {
				t.Errorf("name/size/mode/permissions = %q/%d/%o/%q", e.GetName(), e.GetSize(), e.GetMode(), e.GetPermissions())
			}
			if e.GetOwner() != "root" || e.GetGroup() != "root" {
				t.Errorf("owner/group = %s/%s, want root/root", e.GetOwner(), e.GetGroup())
			}
			if !e.GetModifiedTime().AsTime().Equal(mtime) {
				t.Errorf("modified = %v, want %v", e.GetModifiedTime().AsTime(), mtime)
			}
			if e.GetMetadata()["owner-team"] != "infra" || len(e.GetMetadata()) != 1 {
				t.Errorf("metadata = %v, want owner-team=infra", e.GetMetadata())
			}
			if e.SymlinkTarget != nil {
				t.Errorf("symlink_target set on a file: %q", e.GetSymlinkTarget())
			}
		}},
		{name: "relative to workdir", path: "a.txt", wantType: rpc.FileType_FILE_TYPE_FILE, wantPath: file},
		{name: "directory", path: dir, wantType: rpc.FileType_FILE_TYPE_DIRECTORY, wantPath: dir, check: func(t *testing.T, e *rpc.EntryInfo) {
			if !strings.HasPrefix(e.GetPermissions(), "d") {
				t.Errorf("permissions = %q, want a directory mode string", e.GetPermissions())
			}
		}},
		{name: "symlink to file reports the target", path: filepath.Join(dir, "link"), wantType: rpc.FileType_FILE_TYPE_FILE, wantPath: filepath.Join(dir, "link"), check: func(t *testing.T, e *rpc.EntryInfo) {
			if e.GetSymlinkTarget() != file || e.GetSize() != 5 || e.GetMode() != 0o644 || !strings.HasPrefix(e.GetPermissions(), "L") {
				t.Errorf("target/size/mode/permissions = %q/%d/%o/%q", e.GetSymlinkTarget(), e.GetSize(), e.GetMode(), e.GetPermissions())
			}
		}},
		{name: "dangling symlink", path: filepath.Join(dir, "dangling"), wantType: rpc.FileType_FILE_TYPE_SYMLINK, wantPath: filepath.Join(dir, "dangling"), check: func(t *testing.T, e *rpc.EntryInfo) {
			if e.GetSymlinkTarget() != filepath.Join(dir, "gone") {
				t.Errorf("symlink_target = %q", e.GetSymlinkTarget())
			}
		}},
		{name: "missing", path: filepath.Join(dir, "nope"), code: connect.CodeNotFound},
		{name: "empty path", path: "", code: connect.CodeInvalidArgument},
		{name: "NUL in path", path: dir + "/a\x00b", code: connect.CodeInvalidArgument},
		{name: "unknown user", path: file, user: "no-such-user-hearth", code: connect.CodeUnauthenticated},
		{name: "not a directory in path", path: file + "/x", code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.client.Stat(ctx, req(&rpc.StatRequest{Path: tt.path}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			if err != nil {
				return
			}
			e := res.Msg.GetEntry()
			if e.GetType() != tt.wantType || e.GetPath() != tt.wantPath {
				t.Errorf("type/path = %v/%q, want %v/%q", e.GetType(), e.GetPath(), tt.wantType, tt.wantPath)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestStatPermissionDenied(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	private := filepath.Join(dir, "private")
	writeFile(t, filepath.Join(private, "secret"), "x", 0o600)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Stat(context.Background(), req(&rpc.StatRequest{Path: filepath.Join(private, "secret")}, unprivileged))
	if codeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
	// root may look.
	if _, err := h.client.Stat(context.Background(), req(&rpc.StatRequest{Path: filepath.Join(private, "secret")}, "root")); err != nil {
		t.Fatalf("as root: %v", err)
	}
}

func TestMakeDir(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := sharedDir(t)
	rootOnly := filepath.Join(dir, "root-only")
	if err := os.Mkdir(rootOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "file"), "x", 0o644)
	nobody := lookup(t, unprivileged)

	tests := []struct {
		name  string
		path  string
		user  string
		code  connect.Code
		owner uint32
	}{
		{name: "with parents", path: filepath.Join(dir, "a/b/c"), owner: 0},
		{name: "as user owns new dirs", path: filepath.Join(dir, "u1/u2"), user: unprivileged, owner: nobody.UID},
		{name: "existing directory", path: rootOnly, code: connect.CodeAlreadyExists},
		{name: "existing file", path: filepath.Join(dir, "file"), code: connect.CodeInvalidArgument},
		{name: "parent is a file", path: filepath.Join(dir, "file", "sub"), code: connect.CodeInvalidArgument},
		{name: "no write permission", path: filepath.Join(rootOnly, "x"), user: unprivileged, code: connect.CodePermissionDenied},
		{name: "empty path", path: "", code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.json.MakeDir(ctx, req(&rpc.MakeDirRequest{Path: tt.path}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			if err != nil {
				return
			}
			if res.Msg.GetEntry().GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || res.Msg.GetEntry().GetPath() != tt.path {
				t.Errorf("entry = %v", res.Msg.GetEntry())
			}
			for p := tt.path; p != dir; p = filepath.Dir(p) {
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil {
					t.Fatal(err)
				}
				if st.Uid != tt.owner || st.Mode&syscall.S_IFDIR == 0 {
					t.Errorf("%s: uid %d dir %v, want uid %d dir", p, st.Uid, st.Mode&syscall.S_IFDIR != 0, tt.owner)
				}
			}
		})
	}
}

func TestMove(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := sharedDir(t)
	writeFile(t, filepath.Join(dir, "src.txt"), "payload", 0o644)
	writeFile(t, filepath.Join(dir, "full/keep"), "x", 0o644)
	writeFile(t, filepath.Join(dir, "dirsrc/inner"), "y", 0o644)
	rootOnly := filepath.Join(dir, "root-only")
	writeFile(t, filepath.Join(rootOnly, "f"), "z", 0o644)

	tests := []struct {
		name     string
		src, dst string
		user     string
		code     connect.Code
	}{
		{name: "into new nested dirs", src: filepath.Join(dir, "src.txt"), dst: filepath.Join(dir, "x/y/dst.txt")},
		{name: "directory", src: filepath.Join(dir, "dirsrc"), dst: filepath.Join(dir, "dirdst")},
		{name: "missing source", src: filepath.Join(dir, "nope"), dst: filepath.Join(dir, "z"), code: connect.CodeNotFound},
		{name: "onto non-empty directory", src: filepath.Join(dir, "dirdst"), dst: filepath.Join(dir, "full"), code: connect.CodeAlreadyExists},
		{name: "no permission", src: filepath.Join(rootOnly, "f"), dst: filepath.Join(dir, "stolen"), user: unprivileged, code: connect.CodePermissionDenied},
		{name: "empty destination", src: filepath.Join(dir, "full"), dst: "", code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.client.Move(ctx, req(&rpc.MoveRequest{Source: tt.src, Destination: tt.dst}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			if err != nil {
				return
			}
			if res.Msg.GetEntry().GetPath() != tt.dst {
				t.Errorf("entry path = %q, want %q", res.Msg.GetEntry().GetPath(), tt.dst)
			}
			if _, err := os.Lstat(tt.src); !os.IsNotExist(err) {
				t.Errorf("source still exists: %v", err)
			}
			if _, err := os.Lstat(tt.dst); err != nil {
				t.Errorf("destination missing: %v", err)
			}
		})
	}
}

func TestListDir(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := sharedDir(t)
	writeFile(t, filepath.Join(dir, "b.txt"), "b", 0o644)
	writeFile(t, filepath.Join(dir, "sub/c.txt"), "c", 0o644)
	writeFile(t, filepath.Join(dir, "sub/deeper/d.txt"), "d", 0o644)
	if err := os.Symlink(dir, filepath.Join(dir, "sub/loop")); err != nil { // a cycle back to the root
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(filepath.Dir(dir), "alias")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(filepath.Dir(dir), "alias")) })
	private := filepath.Join(dir, "private")
	writeFile(t, filepath.Join(private, "p"), "p", 0o600)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}

	rel := func(es []*rpc.EntryInfo, base string) []string {
		var out []string
		for _, e := range es {
			r, _ := filepath.Rel(base, e.GetPath())
			out = append(out, r)
		}
		return out
	}
	tests := []struct {
		name  string
		path  string
		depth uint32
		user  string
		code  connect.Code
		want  []string
	}{
		{name: "default depth is one", path: dir, want: []string{"b.txt", "private", "sub"}},
		{name: "depth two", path: dir, depth: 2, want: []string{"b.txt", "private", "private/p", "sub", "sub/c.txt", "sub/deeper", "sub/loop"}},
		{name: "deep symlink cycle is not followed", path: dir, depth: 10, want: []string{"b.txt", "private", "private/p", "sub", "sub/c.txt", "sub/deeper", "sub/deeper/d.txt", "sub/loop"}},
		{name: "through a symlinked root", path: filepath.Join(filepath.Dir(dir), "alias"), want: []string{"b.txt", "private", "sub"}},
		{name: "unreadable subdirectory is listed without contents", path: dir, depth: 2, user: unprivileged, want: []string{"b.txt", "private", "sub", "sub/c.txt", "sub/deeper", "sub/loop"}},
		{name: "unreadable directory", path: private, user: unprivileged, code: connect.CodePermissionDenied},
		{name: "not a directory", path: filepath.Join(dir, "b.txt"), code: connect.CodeInvalidArgument},
		{name: "missing", path: filepath.Join(dir, "nope"), code: connect.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.client.ListDir(ctx, req(&rpc.ListDirRequest{Path: tt.path, Depth: tt.depth}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			if err != nil {
				return
			}
			got := rel(res.Msg.GetEntries(), tt.path)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("entries = %v, want %v", got, tt.want)
			}
			for _, e := range res.Msg.GetEntries() {
				if e.GetName() != filepath.Base(e.GetPath()) || e.GetOwner() == "" || e.GetModifiedTime() == nil {
					t.Errorf("incomplete entry %v", e)
				}
				if e.GetName() == "loop" && (e.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || e.GetSymlinkTarget() != dir) {
					t.Errorf("loop entry = %v, want a directory symlink to %s", e, dir)
				}
			}
		})
	}
}

func TestRemove(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := sharedDir(t)
	writeFile(t, filepath.Join(dir, "f"), "x", 0o644)
	writeFile(t, filepath.Join(dir, "tree/a/b/c"), "x", 0o644)
	rootOnly := filepath.Join(dir, "root-only")
	writeFile(t, filepath.Join(rootOnly, "f"), "x", 0o666)
	if err := os.Symlink(filepath.Join(dir, "tree"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		user string
		code connect.Code
		gone bool
	}{
		{name: "file", path: filepath.Join(dir, "f"), gone: true},
		{name: "symlink only", path: filepath.Join(dir, "link"), gone: true},
		{name: "directory tree", path: filepath.Join(dir, "tree"), gone: true},
		{name: "missing is fine", path: filepath.Join(dir, "never"), gone: true},
		{name: "no permission", path: filepath.Join(rootOnly, "f"), user: unprivileged, code: connect.CodePermissionDenied},
		{name: "root directory", path: "/", code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.Remove(ctx, req(&rpc.RemoveRequest{Path: tt.path}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			if _, err := os.Lstat(tt.path); tt.gone != os.IsNotExist(err) {
				t.Errorf("after remove: lstat err = %v, want gone=%v", err, tt.gone)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(rootOnly, "f")); err != nil {
		t.Errorf("denied remove still deleted the file: %v", err)
	}
}

func TestMakeDirDiskFull(t *testing.T) {
	h := newHarness(t)
	dir := mountTiny(t, "size=1m,nr_inodes=4")
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = h.client.MakeDir(context.Background(), req(&rpc.MakeDirRequest{Path: filepath.Join(dir, fmt.Sprint("d", i))}, ""))
	}
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted once inodes run out", err)
	}
}
