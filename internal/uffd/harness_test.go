package uffd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the test harness: a client that does what Firecracker does on a snapshot
// restore (anonymous MAP_PRIVATE guest memory, a userfaultfd with the non-cooperative event
// features, UFFDIO_REGISTER in missing mode, JSON mappings plus the descriptor over the
// socket), and helpers to run a real server against it.

const pageSize = 4096

// wantFeatures are the events Firecracker asks for so that balloon and VMM changes to guest
// memory reach the handler.
const wantFeatures = featureEventRemove | featureEventUnmap | featureEventRemap | featureEventFork

// patternWord is the 8 bytes at offset off of a test memory file: unique per word, so a page
// served from the wrong offset never compares equal.
func patternWord(off uint64) uint64 { return (off/8+1)*0x9E3779B97F4A7C15 ^ 0x5DEECE66D }

// writeMemFile creates a memory file of size bytes filled with the pattern.
func writeMemFile(tb testing.TB, path string, size int) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := 0; off < size; off += len(buf) {
		n := min(len(buf), size-off)
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], patternWord(uint64(off+i)))
		}
		if _, err := f.Write(buf[:n]); err != nil {
			tb.Fatal(err)
		}
	}
}

// expected returns the pattern bytes [off, off+n) of a memory file.
func expected(off, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], patternWord(uint64(off+i)))
	}
	return b
}

// shortTempDir returns a temporary directory with a path short enough for a Unix socket
// (108 bytes), which t.TempDir's test-named paths can exceed.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "uffd")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// availableFeatures returns the userfaultfd features the kernel has. It skips the test
// when userfaultfd itself is unavailable, and says why.
func availableFeatures(tb testing.TB) uint64 {
	tb.Helper()
	f, err := probeFeatures()
	if err != nil {
		tb.Skipf("userfaultfd unavailable on this machine (needs root or vm.unprivileged_userfaultfd=1, and CONFIG_USERFAULTFD): %v", err)
	}
	return f
}

// probeFeatures asks the kernel for its features on a throwaway descriptor: UFFDIO_API may
// be called only once per descriptor, and asking for a missing feature fails it.
func probeFeatures() (uint64, error) {
	fd, err := newUserfaultfd()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	api := uffdioAPI{API: uffdAPI}
	if err := ioctl(fd, ioctlAPI, unsafe.Pointer(&api)); err != nil {
		return 0, fmt.Errorf("UFFDIO_API: %w", err)
	}
	return api.Features, nil
}

func newUserfaultfd() (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		return -1, fmt.Errorf("userfaultfd(2): %w", errno)
	}
	return int(fd), nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// client is guest memory as Firecracker holds it, registered with a userfaultfd.
type client struct {
	mem      []byte
	uffd     int
	features uint64
}

// newClient maps size bytes of anonymous private memory and registers it in missing mode
// on a new userfaultfd with every event feature the kernel offers out of wantFeatures.
func newClient(tb testing.TB, size int) *client {
	tb.Helper()
	c, err := openClient(size, 0, availableFeatures(tb)&wantFeatures)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// openClient is newClient for helper processes, which have no testing.TB. registerExtra
// registers that many bytes beyond the memory the client will describe (a broken client).
func openClient(size, registerExtra int, features uint64) (*client, error) {
	mem, err := unix.Mmap(-1, 0, size+registerExtra, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap guest memory: %w", err)
	}
	fd, err := newUserfaultfd()
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	c := &client{mem: mem[:size], uffd: fd, features: features}
	api := uffdioAPI{API: uffdAPI, Features: features}
	if err := ioctl(fd, ioctlAPI, unsafe.Pointer(&api)); err != nil {
		c.close()
		return nil, fmt.Errorf("UFFDIO_API features %#x: %w", features, err)
	}
	reg := uffdioRegister{Range: uffdioRange{Start: c.addr(), Len: uint64(size + registerExtra)}, Mode: registerModeMissing}
	if err := ioctl(fd, ioctlRegister, unsafe.Pointer(&reg)); err != nil {
		c.close()
		return nil, fmt.Errorf("UFFDIO_REGISTER: %w", err)
	}
	return c, nil
}

func (c *client) addr() uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(c.mem)))) }

// region describes [off, off+size) of the client's memory as backed by fileOff.
func (c *client) region(off, size, fileOff uint64) Region {
	return Region{BaseHostVirtAddr: c.addr() + off, Size: size, Offset: fileOff, PageSize: pageSize}
}

// send connects to the server and hands over the mappings and the userfaultfd in one
// message, as Firecracker does. The connection is returned open, as Firecracker keeps it.
func (c *client) send(tb testing.TB, socket string, regions []Region) *net.UnixConn {
	tb.Helper()
	data, err := json.Marshal(regions)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := sendHandshake(socket, data, c.uffd)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func sendHandshake(socket string, data []byte, fd int) (*net.UnixConn, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to uffd server: %w", err)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := conn.WriteMsgUnix(data, oob, nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send mappings: %w", err)
	}
	return conn, nil
}

// close drops the client's userfaultfd and memory. With the server gone too, nothing waits
// on events any more, so the munmap cannot block.
func (c *client) close() {
	if c.uffd >= 0 {
		unix.Close(c.uffd)
		c.uffd = -1
	}
	if c.mem != nil {
		unix.Munmap(c.mem[:cap(c.mem)])
		c.mem = nil
	}
}

// unmapAll unmaps the client's memory while the server runs (so UFFD_EVENT_UNMAP is read).
func (c *client) unmapAll(tb testing.TB) {
	tb.Helper()
	if err := unix.Munmap(c.mem[:cap(c.mem)]); err != nil {
		tb.Fatalf("munmap guest memory: %v", err)
	}
	c.mem = nil
}

// testServer is a running server and the result of its Serve.
type testServer struct {
	*Server
	socket string
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a server on a new socket in dir for memFile.
func startServer(tb testing.TB, dir, memFile string, cfg Config) *testServer {
	tb.Helper()
	cfg.SocketPath = filepath.Join(dir, "uffd.sock")
	cfg.MemFile = memFile
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := NewServer(cfg)
	if err != nil {
		tb.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, socket: cfg.SocketPath, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if _, err := ts.wait(10 * time.Second); err != nil {
			tb.Errorf("server did not stop after cancel: %v", err)
		}
	})
	return ts
}

// wait returns Serve's result, or an error if it has not returned within d.
func (ts *testServer) wait(d time.Duration) (serveErr, timeout error) {
	select {
	case err, ok := <-ts.done:
		if !ok {
			return nil, nil
		}
		close(ts.done)
		return err, nil
	case <-time.After(d):
		return nil, errors.New("Serve still running")
	}
}

// testWriter sends server logs to the test log, dropping them once the test is over.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended panics
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// within runs fn and crashes the test binary with all stacks if it takes longer than d. A
// thread stuck on a userfaultfd fault nobody serves cannot be interrupted any other way,
// and a crash with stacks beats a silent hang until the global test timeout.
func within(tb testing.TB, d time.Duration, what string, fn func()) {
	tb.Helper()
	timer := time.AfterFunc(d, func() { panic(fmt.Sprintf("%s: still blocked after %v (fault not served?)", what, d)) })
	defer timer.Stop()
	fn()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
