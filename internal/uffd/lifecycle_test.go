package uffd

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewServerRejectsBadConfig(t *testing.T) {
	dir := shortTempDir(t)
	mem := filepath.Join(dir, "mem")
	writeMemFile(t, mem, 1<<20)
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy := filepath.Join(dir, "busy.sock")
	ln, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"chunk not a power of two", Config{MemFile: mem, ChunkSize: 3 << 12}, "chunk size"},
		{"chunk below a page", Config{MemFile: mem, ChunkSize: 512}, "chunk size"},
		{"missing memory file", Config{MemFile: filepath.Join(dir, "nope")}, "open memory file"},
		{"empty memory file", Config{MemFile: empty}, "empty"},
		{"socket in use", Config{MemFile: mem, SocketPath: busy}, "another server"},
		{"no socket", Config{MemFile: mem, SocketPath: "-"}, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			switch cfg.SocketPath {
			case "":
				cfg.SocketPath = filepath.Join(dir, "s.sock")
			case "-":
				cfg.SocketPath = ""
			}
			srv, err := NewServer(cfg)
			if err == nil {
				srv.Close()
				t.Fatalf("NewServer succeeded, want error about %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewServer error %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

// TestStaleSocketIsReplaced: a socket file left by a dead server must not stop a restart.
func TestStaleSocketIsReplaced(t *testing.T) {
	dir := shortTempDir(t)
	mem := filepath.Join(dir, "mem")
	writeMemFile(t, mem, 1<<20)
	sock := filepath.Join(dir, "uffd.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves the file, nobody answering
	srv, err := NewServer(Config{SocketPath: sock, MemFile: mem})
	if err != nil {
		t.Fatalf("NewServer over a stale socket: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Close: %v", err)
	}
}

// TestClientWithoutDescriptorIsTurnedAway: a client that sends no userfaultfd (a probe, a
// confused program) is not waiting on the server, so it is neither killed nor counted, and
// the next real client is served.
func TestClientWithoutDescriptorIsTurnedAway(t *testing.T) {
	const size = 1 << 20
	ts, _ := setup(t, size, Config{MaxSessions: 1})
	conn, err := sendHandshake(ts.socket, []byte(`[{"base_host_virt_addr":4096,"size":4096,"offset":0}]`), -1)
	if err != nil {
		t.Fatal(err)
	}
	// The server closes the connection on us.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("server kept talking to a client without a userfaultfd")
	}
	conn.Close()

	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	within(t, 10*time.Second, "read after a bad client", func() {
		assertBytes(t, "memory", c.mem, expected(0, size))
	})
	endSession(t, ts, c)
	if st := ts.Stats(); st.Sessions != 1 || st.Killed != 0 {
		t.Errorf("stats %+v: want 1 session and no kill", st)
	}
}

// TestServeStopsOnCancel: cancelling the context ends Serve promptly even while a client
// is connected and idle, and removes the socket.
func TestServeStopsOnCancel(t *testing.T) {
	const size = 4 << 20
	ts, _ := setup(t, size, Config{})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	within(t, 10*time.Second, "read before cancel", func() {
		assertBytes(t, "first MiB", c.mem[:1<<20], expected(0, 1<<20))
	})
	ts.cancel()
	serveErr, timeout := ts.wait(5 * time.Second)
	if timeout != nil {
		t.Fatalf("Serve did not return after cancel: %v", timeout)
	}
	if serveErr != nil {
		t.Errorf("Serve after cancel: %v", serveErr)
	}
	if _, err := os.Stat(ts.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still present after Serve returned: %v", err)
	}
}
