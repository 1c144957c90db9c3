package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

const uffdDefinition = "internal/uffd's BenchmarkRestore1GiB (go test -run '^$' -bench Restore -benchtime 1x " +
	"./internal/uffd/): one client registers 1 GiB of guest memory and touches every page once " +
	"while the uffd server fills the faults from a 1 GiB memory file in the page cache, per " +
	"chunk size the server copies per fault; MiB/s of memory restored."

// benchLine matches e.g. "BenchmarkRestore1GiB/chunk=4KiB-2  1  123 ns/op  812.3 MiB/s  4.8 µs/page".
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+.*?([0-9.]+) MiB/s`)

func runUffd(ctx context.Context, repo string, s *Section) error {
	if _, err := os.Stat(filepath.Join(repo, "internal/uffd")); err != nil {
		s.note("restore 1 GiB", "not available: internal/uffd does not exist in this tree")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "Restore", "-benchtime", "1x", "./internal/uffd/")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	found := 0
	for _, l := range bytes.Split(out, []byte("\n")) {
		m := benchLine.FindSubmatch(bytes.TrimSpace(l))
		if m == nil {
			continue
		}
		v, perr := strconv.ParseFloat(string(m[2]), 64)
		if perr != nil {
			continue
		}
		s.add("restore "+string(m[1]), v, "MiB/s")
		found++
	}
	switch {
	case err != nil && found == 0:
		s.note("restore 1 GiB", "not available: "+oneLine(fmt.Sprintf("go test failed (%v): %s", err, lastLines(out, 3)), 90))
	case found == 0:
		s.note("restore 1 GiB", "not available: no Restore benchmark in internal/uffd ("+oneLine(lastLines(out, 2), 60)+")")
	case err != nil:
		return fmt.Errorf("uffd benchmark: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

// lastLines returns the last n non-empty lines of out.
func lastLines(out []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
