// Package sudo gives sandbox users a working `sudo` on every runtime.
//
// A set-user-ID sudo cannot work under gVisor as Hearth runs it (runsc ignores the set-user-ID
// bit), so the sandbox's /usr/bin/sudo is envd itself, invoked under the name sudo (see Main).
// That client runs with the caller's own credentials and asks envd, which runs as root, to
// start the command: it connects to envd's sudo socket inside the sandbox, hands over its
// stdin, stdout and stderr with SCM_RIGHTS, and sends the command, its working directory,
// environment and options. envd learns who is asking from the kernel (SO_PEERCRED), not from
// the request, checks the policy (see Policy), starts the command as the target user in a
// session of its own, delivers the signals the client relays, and answers with how the
// command ended, which the client then reproduces: the same exit code, or death by the same
// signal.
//
// The socket lives in a root-owned directory on the sandbox's own filesystem (SocketPath),
// never in a directory the host shares with the sandbox: the host never talks to it, and
// nothing outside the sandbox can reach it.
package sudo

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// SocketPath is where envd listens for sudo requests inside a sandbox. The directory is
// created by envd (root, mode 0755), so no user can put a socket of their own there.
const SocketPath = "/run/envd/sudo.sock"

// SocketEnv overrides SocketPath for the client; envd on a development host and the tests use
// it. Pointing it elsewhere only redirects the caller's own requests.
const SocketEnv = "HEARTH_SUDO_SOCKET"

// maxRequest bounds a request (argv and environment), like the kernel's ARG_MAX order.
const maxRequest = 2 << 20

// request is what the client sends first, together with its three stdio descriptors.
type request struct {
	// Check asks only whether the caller may use sudo (sudo -v, sudo -l); nothing runs.
	Check bool `json:"check,omitempty"`
	// User is the account to run as ("" for root).
	User string `json:"user,omitempty"`
	// Args is the command and its arguments; empty with Shell or Login for an interactive
	// shell.
	Args []string `json:"args,omitempty"`
	// Shell (-s) runs Args through the shell; Login (-i) through the target's login shell,
	// in the target's home, with a fresh environment.
	Shell bool `json:"shell,omitempty"`
	Login bool `json:"login,omitempty"`
	// PreserveEnv (-E) keeps the caller's environment; PreserveList (--preserve-env=A,B)
	// keeps those variables only.
	PreserveEnv  bool     `json:"preserve_env,omitempty"`
	PreserveList []string `json:"preserve_list,omitempty"`
	// SetHome (-H) sets HOME to the target's home even when the environment is preserved.
	SetHome bool `json:"set_home,omitempty"`
	// SetVars are VAR=value words given before the command (`sudo FOO=1 cmd`).
	SetVars []string `json:"set_vars,omitempty"`
	// Env is the caller's environment, Cwd its working directory (Chdir, -D, replaces it).
	Env   []string `json:"env,omitempty"`
	Cwd   string   `json:"cwd,omitempty"`
	Chdir string   `json:"chdir,omitempty"`
}

// clientMsg is what the client sends after the request: a signal to deliver to the command.
type clientMsg struct {
	Signal int `json:"signal"`
}

// reply is what envd sends back: first Started (or Error), then how the command ended.
type reply struct {
	// Error says why nothing was started; the client prints it and exits 1.
	Error string `json:"error,omitempty"`
	// Started carries the command's pid once it runs; Allowed answers a Check.
	Started int  `json:"started,omitempty"`
	Allowed bool `json:"allowed,omitempty"`
	// Done marks the end: Exit is the exit code, or Signal the signal that killed it.
	Done   bool `json:"done,omitempty"`
	Exit   int  `json:"exit,omitempty"`
	Signal int  `json:"signal,omitempty"`
}

// lineReader reads newline-delimited JSON messages of bounded size.
type lineReader struct{ r *bufio.Reader }

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next decodes the next message into v; io.EOF means the peer closed cleanly.
func (l *lineReader) next(v any, limit int) error {
	var line []byte
	for {
		chunk, err := l.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return fmt.Errorf("message longer than %d bytes", limit)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("malformed message: %w", err)
	}
	return nil
}

// encode renders v as one message line.
func encode(v any) []byte {
	b, _ := json.Marshal(v) // the message types always marshal
	return append(b, '\n')
}
