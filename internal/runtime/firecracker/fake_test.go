package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/runtime/firecracker/api"
	"github.com/hearthsh/hearth/internal/runtime/firecracker/api/apitest"
)

// The driver's tests start a fake Firecracker: this test binary, re-executed (by nsenter or
// directly) under the name "firecracker" with the environment below. It serves the
// contract-enforcing apitest server on --api-sock, logs every call as a JSON line, writes
// snapshot files on snapshot/create, does a real userfaultfd handshake with the driver's
// uffd server on snapshot/load and checks the memory it gets back, and plays envd's
// /health once its "guest" runs.
const (
	envFake      = "HEARTH_FAKE_FIRECRACKER" // "1" in the fake
	envCallLog   = "HEARTH_FAKE_FC_LOG"      // file receiving one JSON Call per line
	envFail      = "HEARTH_FAKE_FC_FAIL"     // "ROUTE=fault" makes that route fail
	envPartial   = "HEARTH_FAKE_FC_PARTIAL"  // "1": snapshot/create writes no memory file
	envEnvdAddr  = "HEARTH_FAKE_ENVD"        // host:port the fake envd listens on
	fakeMemBytes = 4 << 20                   // guest memory the fake snapshots
)

// fakeState is the fake's snapshot state file.
type fakeState struct {
	MemBytes int           `json:"mem_bytes"`
	Devices  apitest.State `json:"devices"`
}

// pagePattern is the byte every byte of guest page i holds in a fake snapshot.
func pagePattern(i int) byte { return byte(i%251 + 1) }

func runFakeFirecracker() error {
	args := os.Args[1:]
	sock, ok := flagValue(args, "--api-sock")
	if !ok {
		return errors.New("fake firecracker: no --api-sock")
	}
	logf, err := os.OpenFile(os.Getenv(envCallLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	srv, err := apitest.New(sock)
	if err != nil {
		return err
	}
	if route, fault, ok := strings.Cut(os.Getenv(envFail), "="); ok {
		srv.Fail(route, fault)
	}
	var envdOnce sync.Once
	startEnvd := func() {
		envdOnce.Do(func() {
			ln, err := net.Listen("tcp", os.Getenv(envEnvdAddr))
			if err != nil {
				fmt.Fprintln(os.Stderr, "fake envd:", err)
				return
			}
			go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			}))
		})
	}
	srv.OnCall = func(c apitest.Call) {
		b, _ := json.Marshal(c)
		_, _ = logf.Write(append(b, '\n'))
		if c.Status/100 != 2 {
			return
		}
		if c.Route == "PUT /actions" || (c.Route == "PATCH /vm" && strings.Contains(string(c.Body), api.StateResumed)) {
			startEnvd()
		}
	}
	srv.OnSnapshotCreate = func(p api.SnapshotCreate, st apitest.State) error {
		b, err := json.Marshal(fakeState{MemBytes: fakeMemBytes, Devices: st})
		if err != nil {
			return err
		}
		if err := os.WriteFile(p.SnapshotPath, b, 0o600); err != nil {
			return err
		}
		if os.Getenv(envPartial) == "1" {
			return nil // Firecracker died mid-way: the state file exists, the memory does not
		}
		mem := make([]byte, fakeMemBytes)
		for i := range mem {
			mem[i] = pagePattern(i / os.Getpagesize())
		}
		return os.WriteFile(p.MemFilePath, mem, 0o600)
	}
	srv.OnSnapshotLoad = func(p api.SnapshotLoad) (apitest.State, error) {
		if p.MemBackend == nil || p.MemBackend.BackendType != api.BackendUffd {
			return apitest.State{}, errors.New("fake: only the Uffd backend is implemented")
		}
		b, err := os.ReadFile(p.SnapshotPath)
		if err != nil {
			return apitest.State{}, err
		}
		var st fakeState
		if err := json.Unmarshal(b, &st); err != nil {
			return apitest.State{}, fmt.Errorf("state file: %w", err)
		}
		return st.Devices, restoreViaUffd(p.MemBackend.BackendPath, st.MemBytes)
	}
	select {} // until the driver kills us
}

// restoreViaUffd does what Firecracker does with the Uffd backend: anonymous memory
// registered with a userfaultfd, handed with the region list to the server over its
// socket; then it reads every page back and checks it holds the snapshot's contents.
func restoreViaUffd(sock string, size int) error {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return err
	}
	ufd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		return fmt.Errorf("userfaultfd: %w", errno)
	}
	defer unix.Close(int(ufd))
	// struct uffdio_api {api, features, ioctls}; UFFD_API = 0xAA.
	// Firecracker requires UFFD_FEATURE_EVENT_REMOVE (1<<3) for the balloon.
	apiMsg := [3]uint64{0xAA, 1 << 3, 0}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ufd, 0xC018AA3F /* UFFDIO_API */, uintptr(unsafe.Pointer(&apiMsg[0]))); e != 0 {
		return fmt.Errorf("UFFDIO_API: %w", e)
	}
	// struct uffdio_register {range{start,len}, mode, ioctls}; mode MISSING = 1.
	reg := [4]uint64{uint64(uintptr(unsafe.Pointer(&mem[0]))), uint64(size), 1, 0}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ufd, 0xC020AA00 /* UFFDIO_REGISTER */, uintptr(unsafe.Pointer(&reg[0]))); e != 0 {
		return fmt.Errorf("UFFDIO_REGISTER: %w", e)
	}
	regions, _ := json.Marshal([]map[string]uint64{{
		"base_host_virt_addr": reg[0], "size": uint64(size), "offset": 0,
		"page_size": uint64(os.Getpagesize()), "page_size_kib": uint64(os.Getpagesize()),
	}})
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	// Like Firecracker, keep the connection open for the VM's life.
	if _, _, err := conn.WriteMsgUnix(regions, unix.UnixRights(int(ufd)), nil); err != nil {
		return err
	}
	page := os.Getpagesize()
	for i := 0; i < size/page; i++ {
		if got := mem[i*page+page/2]; got != pagePattern(i) {
			return fmt.Errorf("restored page %d holds %#x, snapshot had %#x", i, got, pagePattern(i))
		}
	}
	return nil
}
