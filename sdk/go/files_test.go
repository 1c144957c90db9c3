package hearth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func TestFilesRoundTrip(t *testing.T) {
	sb := sandbox(t)
	ctx := context.Background()
	dir := t.TempDir()
	allBytes := make([]byte, 256*4)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	tests := []struct {
		name string
		path string
		data []byte
	}{
		{name: "every byte value", path: filepath.Join(dir, "bin"), data: allBytes},
		{name: "empty", path: filepath.Join(dir, "empty"), data: nil},
		{name: "missing parents are created", path: filepath.Join(dir, "a/b/c/file.txt"), data: []byte("nested\n")},
		{name: "overwrite", path: filepath.Join(dir, "bin"), data: []byte("shorter")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := sb.Files.Write(ctx, tt.path, bytes.NewReader(tt.data), nil)
			if err != nil {
				t.Fatal(err)
			}
			if info.Path != tt.path || info.Type != "file" {
				t.Errorf("Write info = %+v, want path %s type file", info, tt.path)
			}
			r, err := sb.Files.Read(ctx, tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Fatalf("read back %d bytes %q…, want %d bytes", len(got), head(got), len(tt.data))
			}
		})
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// A 20 MiB file streams both ways without the client holding it in memory.
func TestFilesStreamLargeFile(t *testing.T) {
	sb := sandbox(t)
	ctx := context.Background()
	const size = 20 << 20
	path := filepath.Join(t.TempDir(), "big")

	src := io.LimitReader(rand.NewChaCha8([32]byte{7}), size)
	want := sha256.New()
	before := allocated()
	if _, err := sb.Files.Write(ctx, path, io.TeeReader(src, want), nil); err != nil {
		t.Fatal(err)
	}
	if a := allocated() - before; a > 8<<20 {
		t.Errorf("writing 20 MiB allocated %d MiB in the client: the upload is buffered", a>>20)
	}

	before = allocated()
	r, err := sb.Files.Read(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if a := allocated() - before; a > 8<<20 {
		t.Errorf("reading 20 MiB allocated %d MiB in the client: the download is buffered", a>>20)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("read back %d bytes with a different hash, want %d identical bytes", n, size)
	}
}

func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestFilesDirectories(t *testing.T) {
	sb := sandbox(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tree")

	created, err := sb.Files.MakeDir(ctx, dir+"/sub", nil)
	if err != nil || !created {
		t.Fatalf("MakeDir new = %v, %v; want true", created, err)
	}
	created, err = sb.Files.MakeDir(ctx, dir+"/sub", nil)
	if err != nil || created {
		t.Fatalf("MakeDir existing = %v, %v; want false, nil", created, err)
	}
	if _, err := sb.Files.Write(ctx, dir+"/f.txt", strings.NewReader("12345"), nil); err != nil {
		t.Fatal(err)
	}
	entries, err := sb.Files.List(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hearth.EntryInfo{}
	for _, e := range entries {
		got[e.Name] = e
	}
	if len(got) != 2 || got["sub"].Type != hearth.EntryDir || got["f.txt"].Type != hearth.EntryFile || got["f.txt"].Size != 5 {
		t.Fatalf("List = %+v, want dir sub and 5-byte file f.txt", entries)
	}
	if got["f.txt"].Path != dir+"/f.txt" || got["f.txt"].ModTime.IsZero() {
		t.Errorf("f.txt entry = %+v, want its full path and a modification time", got["f.txt"])
	}

	st, err := sb.Files.Stat(ctx, dir+"/f.txt", nil)
	if err != nil || st.Size != 5 || st.Type != hearth.EntryFile {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	if _, err := sb.Files.Rename(ctx, dir+"/f.txt", dir+"/g.txt", nil); err != nil {
		t.Fatal(err)
	}
	if err := sb.Files.Remove(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, dir + "/g.txt"} {
		ok, err := sb.Files.Exists(ctx, p, nil)
		if err != nil || ok {
			t.Errorf("Exists(%s) after Remove = %v, %v; want false", p, ok, err)
		}
	}
}

func TestFilesNotFound(t *testing.T) {
	sb := sandbox(t)
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	_, readErr := sb.Files.Read(ctx, missing, nil)
	_, statErr := sb.Files.Stat(ctx, missing, nil)
	_, listErr := sb.Files.List(ctx, missing, nil)
	for what, err := range map[string]error{"read": readErr, "stat": statErr, "list": listErr} {
		if !hearth.IsNotFound(err) || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s of a missing path: err = %v, want not found naming the path", what, err)
		}
	}
}
