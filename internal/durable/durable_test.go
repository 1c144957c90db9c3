package durable

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFile: the file holds the new content with the given mode, and no temp file is
// left beside it, whether the file existed before or not.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rec.json")
	for _, content := range []string{"first", "second, longer than the first"} {
		if err := WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("content %q, %v; want %q", got, err, content)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir holds %d entries, want only the file: %v", len(ents), ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Error("write into a missing dir succeeded")
	}
}

// TestRenameAndSyncTree: a tree is synced (symlinks skipped, not followed) and renamed.
func TestRenameAndSyncTree(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "img.tmp")
	os.MkdirAll(filepath.Join(src, "sub"), 0o700)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o600)
	os.WriteFile(filepath.Join(src, "sub", "b"), []byte("b"), 0o600)
	os.Symlink("/nonexistent", filepath.Join(src, "link"))
	if err := SyncTree(src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "img")
	if err := Rename(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "sub", "b")); err != nil || string(b) != "b" {
		t.Fatalf("renamed tree: %q, %v", b, err)
	}
	if err := SyncTree(filepath.Join(dir, "missing")); err == nil {
		t.Error("sync of a missing tree succeeded")
	}
}

// TestReplaceDir: a tree replaces a final dir that exists or not, and nothing else is left.
func TestReplaceDir(t *testing.T) {
	for _, existed := range []bool{false, true} {
		dir := t.TempDir()
		final, tmp := filepath.Join(dir, "snapshot"), filepath.Join(dir, "snapshot.tmp")
		if existed {
			os.MkdirAll(final, 0o700)
			os.WriteFile(filepath.Join(final, "img"), []byte("old"), 0o600)
		}
		os.MkdirAll(tmp, 0o700)
		os.WriteFile(filepath.Join(tmp, "img"), []byte("new"), 0o600)
		if err := ReplaceDir(tmp, final); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(final, "img")); string(b) != "new" {
			t.Errorf("existed=%v: final holds %q, want the new tree", existed, b)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("existed=%v: %d entries left, want only final", existed, len(ents))
		}
	}
}
