package hearth_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// TestPackCopy: a COPY's archive holds the matched paths under their context paths, with
// modes and symlinks kept; the hash follows content and the step, and sources outside the
// context are refused.
func TestPackCopy(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "app", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "app", "a.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "app", "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("../a.txt", filepath.Join(dir, "app", "sub", "link"))
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("b"), 0o600)

	hash, archive, err := hearth.PackCopy(dir, "app", "/app")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name] = os.FileMode(h.Mode).String() + " " + h.Linkname + string(body)
	}
	want := map[string]string{
		"app/": "-rwxr-xr-x ", "app/a.txt": "-rw-r--r-- a", "app/sub/": "-rwxr-xr-x ",
		"app/sub/run.sh": "-rwxr-xr-x #!/bin/sh\n", "app/sub/link": "-rwxrwxrwx ../a.txt",
	}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}

	again, _, _ := hearth.PackCopy(dir, "app", "/app")
	otherDest, _, _ := hearth.PackCopy(dir, "app", "/srv")
	os.WriteFile(filepath.Join(dir, "app", "a.txt"), []byte("A"), 0o644)
	changed, _, _ := hearth.PackCopy(dir, "app", "/app")
	if again != hash || otherDest == hash || changed == hash {
		t.Errorf("hashes: same %v, other target differs %v, changed content differs %v", again == hash, otherDest != hash, changed != hash)
	}

	_, glob, err := hearth.PackCopy(dir, "*.txt", "/x/")
	if err != nil || !strings.Contains(tarNames(t, glob), "b.txt") {
		t.Errorf("glob *.txt: %v, entries %s", err, tarNames(t, glob))
	}
	for _, src := range []string{"../etc", "/etc/passwd", "missing", ""} {
		if _, _, err := hearth.PackCopy(dir, src, "/x"); err == nil {
			t.Errorf("PackCopy(%q) packed something", src)
		}
	}
}

func tarNames(t *testing.T, archive []byte) string {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return err.Error()
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return strings.Join(names, ",")
}
