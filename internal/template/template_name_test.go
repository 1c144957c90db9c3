package template

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckName: only NameForm names pass, so none can leave the templates directory, and
// Open and Build refuse the others before touching a path.
func TestCheckName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"base", true}, {"my-tpl-2", true}, {"0", true}, {strings.Repeat("a", 63), true},
		{"", false}, {"..", false}, {"../x", false}, {"a/b", false}, {"-a", false}, {"Base", false},
		{"a.b", false}, {"a b", false}, {strings.Repeat("a", 64), false}, {"a\x00", false},
	} {
		err := CheckName(tt.name)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("CheckName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	dir := t.TempDir()
	if _, err := Open(dir, "../x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Open ../x: %v", err)
	}
	if _, err := Build(t.Context(), BuildOptions{DataDir: dir, Name: "../x", EnvdPath: "/nonexistent"}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Build ../x: %v", err)
	}
}

// FuzzCheckName: every name CheckName accepts is one directory level directly under the
// templates directory.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"base", "../x", "a/b", "..", ".", "a\\b", "my-tpl"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) != nil {
			return
		}
		root := filepath.Join("/data", "templates")
		dir := Dir("/data", name)
		if filepath.Dir(dir) != root || filepath.Base(dir) != name {
			t.Fatalf("accepted %q resolves to %q, outside %s", name, dir, root)
		}
	})
}
