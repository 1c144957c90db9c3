package runtime

import (
	"os"
	"strings"
)

// LogTail returns the last lines (at most 4 KiB) of the log file at path that were written at
// or after offset from (-1 for wherever the last 4 KiB start), joined by " | ". Drivers put it
// in their errors: a VMM's console or runsc's log says why a sandbox did not come up.
func LogTail(path string, from int64, lines int) string {
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
	start := max(fi.Size()-limit, from, 0)
	buf := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(buf, start)
	ls := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, " | ")
}
