package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 2000 {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("\n")
	}
	b.WriteString("boot failed\nlast\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := LogTail(path, -1, 2); got != "boot failed | last" {
		t.Fatalf("LogTail(-1, 2) = %q", got)
	}
	// Only what was written after the mark.
	mark := int64(b.Len() - len("last\n"))
	if got := LogTail(path, mark, 8); got != "last" {
		t.Fatalf("LogTail(mark, 8) = %q", got)
	}
	if got := LogTail(filepath.Join(t.TempDir(), "missing"), -1, 3); got != "" {
		t.Fatalf("LogTail of a missing file = %q", got)
	}
}
