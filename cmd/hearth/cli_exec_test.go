package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSandboxExecCommand(t *testing.T) {
	e := newCLIEnv(t, true)
	id := e.api.AddSandbox("run00000000000000001", "running", nil)
	paused := e.api.AddSandbox("pau00000000000000001", "paused", nil)
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "stdout", args: []string{"sandbox", "exec", id, "--", "echo", "hello world"}, stdout: "hello world\n"},
		{name: "arguments are not re-split or expanded", args: []string{"sandbox", "exec", id, "--", "printf", "[%s]", "a b", "$HOME", "it's"}, stdout: "[a b][$HOME][it's]"},
		{name: "shell syntax through bash -c", args: []string{"sandbox", "exec", id, "--", "bash", "-c", "echo out; echo err >&2; exit 3"}, code: 3, stdout: "out\n", stderr: "err\n"},
		{name: "exit code", args: []string{"sandbox", "exec", id, "--", "false"}, code: 1},
		{name: "killed by signal", args: []string{"sandbox", "exec", id, "--", "bash", "-c", "kill -TERM $$"}, code: 128 + 15},
		{name: "env cwd user", args: []string{"sandbox", "exec", id, "--env", "X=1", "-e", "Y=2", "--cwd", "/tmp", "--user", "root", "--", "bash", "-c", `echo "$X$Y $(pwd) $(id -un)"`},
			stdout: "12 /tmp root\n"},
		{name: "stdin", stdin: "line one\nline two\n", args: []string{"sandbox", "exec", id, "-i", "--", "wc", "-l"}, stdout: "2\n"},
		{name: "no stdin unless asked", stdin: "ignored\n", args: []string{"sandbox", "exec", id, "--", "wc", "-c"}, stdout: "0\n"},
		{name: "missing sandbox", args: []string{"sandbox", "exec", "nope0000000000000000", "--", "true"}, code: 3, stderr: "doesn't exist"},
		{name: "paused sandbox", args: []string{"sandbox", "exec", paused, "--", "true"}, code: 4, stderr: "sandbox is paused; run `hearth sandbox resume " + paused + "` first"},
		{name: "no command", args: []string{"sandbox", "exec", id}, code: 2, stderr: "no command given"},
		{name: "unknown user", args: []string{"sandbox", "exec", id, "--user", "nobody-xyz", "--", "true"}, code: 1, stderr: "nobody-xyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.stdin, tt.args...)
			r.expect(t, tt.code, tt.stdout, tt.stderr)
			if tt.stdout != "" && r.stdout != tt.stdout {
				t.Errorf("stdout %q, want exactly %q", r.stdout, tt.stdout)
			}
		})
	}
}

func TestSandboxCpCommand(t *testing.T) {
	e := newCLIEnv(t, true)
	id := e.api.AddSandbox("run00000000000000001", "running", nil)
	local := t.TempDir()
	remote := t.TempDir() // the envd runs on this machine, so "remote" paths are local too
	content := make([]byte, 3<<20+17)
	rand.Read(content)
	src := filepath.Join(local, "data.bin")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout string
		stderr string
		check  func(t *testing.T, r cliResult)
	}{
		{name: "upload to a path", args: []string{"sandbox", "cp", src, id + ":" + remote + "/up/copy.bin"},
			check: fileEquals(filepath.Join(remote, "up/copy.bin"), content)},
		{name: "upload into a directory", args: []string{"sandbox", "cp", src, id + ":" + remote},
			check: fileEquals(filepath.Join(remote, "data.bin"), content)},
		{name: "upload from stdin", stdin: "from stdin", args: []string{"sandbox", "cp", "-", id + ":" + remote + "/stdin.txt"},
			check: fileEquals(filepath.Join(remote, "stdin.txt"), []byte("from stdin"))},
		{name: "download to a path", args: []string{"sandbox", "cp", id + ":" + remote + "/data.bin", filepath.Join(local, "down.bin")},
			check: fileEquals(filepath.Join(local, "down.bin"), content)},
		{name: "download into a directory", args: []string{"sandbox", "cp", id + ":" + remote + "/stdin.txt", local + "/"},
			check: fileEquals(filepath.Join(local, "stdin.txt"), []byte("from stdin"))},
		{name: "download to stdout", args: []string{"sandbox", "cp", id + ":" + remote + "/stdin.txt", "-"}, stdout: "from stdin"},
		{name: "missing remote file", args: []string{"sandbox", "cp", id + ":" + remote + "/missing", local}, code: 3, stderr: "missing"},
		{name: "missing local file", args: []string{"sandbox", "cp", filepath.Join(local, "missing"), id + ":" + remote}, code: 1, stderr: "no such file"},
		{name: "both local", args: []string{"sandbox", "cp", src, filepath.Join(local, "x")}, code: 2, stderr: "exactly one of SRC and DST"},
		{name: "both remote", args: []string{"sandbox", "cp", id + ":/a", id + ":/b"}, code: 2, stderr: "exactly one of SRC and DST"},
		{name: "local path with a colon", args: []string{"sandbox", "cp", "./a:b", id + ":" + remote}, code: 1, stderr: "a:b"},
		{name: "missing sandbox", args: []string{"sandbox", "cp", src, "nope0000000000000000:/tmp/x"}, code: 3, stderr: "doesn't exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.stdin, tt.args...)
			r.expect(t, tt.code, tt.stdout, tt.stderr)
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
	// A failed download leaves no partial file behind.
	leftovers, _ := filepath.Glob(filepath.Join(local, ".*hearth-cp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func fileEquals(path string, want []byte) func(t *testing.T, r cliResult) {
	return func(t *testing.T, r cliResult) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s has %d bytes, want %d identical bytes", path, len(got), len(want))
		}
		if strings.TrimSpace(r.stderr) != "" {
			t.Errorf("stderr %q on a non-terminal, want nothing", r.stderr)
		}
	}
}
