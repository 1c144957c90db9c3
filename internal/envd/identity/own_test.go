package identity

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Directories and files envd creates for a user belong to that user, whatever the kernel
// does with the filesystem uid.
func TestMkdirAllAndOwnGiveOwnershipToTheUser(t *testing.T) {
	if !IsRoot() {
		t.Skip("changing ownership needs root")
	}
	nobody, err := Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	nested := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(nobody, nested, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(nested, "file"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Own(nobody, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, p := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), nested, filepath.Join(nested, "file")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != nobody.UID {
			t.Errorf("%s owned by uid %d, want %d", p, uid, nobody.UID)
		}
	}
	// The existing parent keeps its owner.
	if fi, _ := os.Stat(base); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("MkdirAll changed the owner of the existing %s", base)
	}
}
