package microvm

import (
	"os"
	"strings"
)

// Tail returns the last lines of the file at path (at most 4 KiB), joined by " | ", for
// error messages: a VM's console log says why it did not come up.
func Tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	const limit = 4096
	start := max(fi.Size()-limit, 0)
	buf := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(buf, start)
	ls := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, " | ")
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
