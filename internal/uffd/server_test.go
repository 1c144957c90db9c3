package uffd

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setup writes a memory file of fileSize bytes and starts a server for it.
func setup(t *testing.T, fileSize int, cfg Config) (*testServer, string) {
	t.Helper()
	dir := shortTempDir(t)
	memFile := filepath.Join(dir, "mem")
	writeMemFile(t, memFile, fileSize)
	return startServer(t, dir, memFile, cfg), memFile
}

// connect creates a client of size bytes, registers cleanups in the order that cannot
// block, and hands it to the server.
func connect(t *testing.T, ts *testServer, size int, regions func(*client) []Region) *client {
	t.Helper()
	c := newClient(t, size)
	t.Cleanup(c.close) // runs after the server's cleanup has stopped it
	ts.cleanupFirst(t)
	c.send(t, ts.socket, regions(c))
	return c
}

// cleanupFirst makes sure the server is stopped before the client's memory goes away.
func (ts *testServer) cleanupFirst(t *testing.T) {
	t.Cleanup(func() { ts.cancel(); ts.wait(10 * time.Second) })
}

// requireFeatures skips when the kernel lacks an event feature a test is about. The
// kernels Hearth targets (>= 5.x) have all of them.
func requireFeatures(t *testing.T, c *client, f uint64) {
	t.Helper()
	if c.features&f != f {
		t.Skipf("kernel lacks userfaultfd features %#x (has %#x)", f, c.features)
	}
}

// assertBytes compares memory with the wanted bytes and reports the first differing page.
func assertBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := 0; i < len(want); i += pageSize {
		end := min(i+pageSize, len(want))
		if !bytes.Equal(got[i:end], want[i:end]) {
			t.Fatalf("%s: page at byte %#x differs: got %x…, want %x…", what, i, got[i:i+16], want[i:i+16])
		}
	}
}

// endSession unmaps all client memory and checks the server ends the session cleanly.
func endSession(t *testing.T, ts *testServer, c *client) {
	t.Helper()
	// munmap waits until the server has read the UNMAP event.
	within(t, 10*time.Second, "unmap guest memory", func() { c.unmapAll(t) })
	err, timeout := ts.wait(10 * time.Second)
	if timeout != nil {
		t.Fatalf("session did not end after the client unmapped its memory: %v", timeout)
	}
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestServeReadsEveryPage reads a whole multi-region guest memory through the server and
// compares it with the file, for several chunk sizes. The regions are laid out in the file
// in the opposite order from memory, so an offset mix-up cannot pass. It also checks the
// point of chunking: far fewer faults than pages.
func TestServeReadsEveryPage(t *testing.T) {
	const size = 32 << 20
	tests := []struct {
		name      string
		chunk     uint64
		maxFaults uint64
	}{
		{"4KiB", 4 << 10, size / pageSize},
		{"64KiB", 64 << 10, size / (64 << 10)},
		{"default", 0, size / DefaultChunkSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, _ := setup(t, size, Config{ChunkSize: tt.chunk, MaxSessions: 1})
			half := uint64(size / 2)
			c := connect(t, ts, size, func(c *client) []Region {
				return []Region{c.region(0, half, half), c.region(half, half, 0)}
			})
			within(t, 30*time.Second, "read guest memory", func() {
				assertBytes(t, "first region", c.mem[:half], expected(int(half), int(half)))
				assertBytes(t, "second region", c.mem[half:], expected(0, int(half)))
			})
			endSession(t, ts, c) // stats are final once Serve has returned
			st := ts.Stats()
			if st.CopiedBytes != size {
				t.Errorf("copied %d bytes, want exactly the %d of guest memory", st.CopiedBytes, size)
			}
			// A thread interrupted by a signal while waiting refaults, so allow a few
			// duplicates, and one more chunk per region for unaligned region edges.
			if limit := tt.maxFaults + tt.maxFaults/50 + 4; st.Faults == 0 || st.Faults > limit {
				t.Errorf("%d faults for %d MiB with chunk %q, want 1..%d", st.Faults, size>>20, tt.name, limit)
			}
		})
	}
}

// TestRemovedRangeReadsZeros is the balloon case: madvise(MADV_DONTNEED) over guest
// memory, part of it already served, part never touched. The range must read as zeros
// afterwards, never as file contents again, including after a second removal of pages the
// guest wrote in between; memory around it keeps its contents.
func TestRemovedRangeReadsZeros(t *testing.T) {
	const size = 16 << 20
	ts, _ := setup(t, size, Config{MaxSessions: 1})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	requireFeatures(t, c, featureEventRemove)

	want := expected(0, size)
	const lo, hi = 3<<20 + 5*pageSize, 9<<20 + 3*pageSize // unaligned to chunks on purpose
	zeros := make([]byte, hi-lo)
	within(t, 30*time.Second, "remove and read", func() {
		assertBytes(t, "before remove", c.mem[:5<<20], want[:5<<20]) // half the range served
		if err := unix.Madvise(c.mem[lo:hi], unix.MADV_DONTNEED); err != nil {
			t.Fatalf("madvise: %v", err)
		}
		assertBytes(t, "removed range", c.mem[lo:hi], zeros)
		assertBytes(t, "below the range", c.mem[:lo], want[:lo])
		assertBytes(t, "above the range", c.mem[hi:], want[hi:])

		copy(c.mem[lo:lo+pageSize], "written by the guest")
		if err := unix.Madvise(c.mem[lo:lo+2*pageSize], unix.MADV_DONTNEED); err != nil {
			t.Fatalf("second madvise: %v", err)
		}
		assertBytes(t, "removed twice", c.mem[lo:lo+2*pageSize], zeros[:2*pageSize])
	})
	endSession(t, ts, c)
	if st := ts.Stats(); st.Removes < 2 || st.ZeroedBytes == 0 {
		t.Errorf("stats %+v: want 2 removes and zero-filled bytes", st)
	}
}

// TestRemappedRangeFollows moves part of guest memory with mremap: pages already served
// move with the mapping, pages never touched must be served at the new address from the
// right file offset, and the memory that did not move is unaffected.
func TestRemappedRangeFollows(t *testing.T) {
	const size = 16 << 20
	ts, _ := setup(t, size, Config{ChunkSize: 64 << 10, MaxSessions: 1})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	requireFeatures(t, c, featureEventRemap|featureEventUnmap)

	want := expected(0, size)
	const off, n = 4 << 20, 4 << 20
	dst, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("reserve destination: %v", err)
	}
	moved := unsafe.Slice((*byte)(dst), n)
	within(t, 30*time.Second, "remap and read", func() {
		assertBytes(t, "touch first MiB of the range", c.mem[off:off+1<<20], want[off:off+1<<20])
		src := unsafe.Pointer(&c.mem[off])
		if _, err := unix.MremapPtr(src, n, dst, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
			t.Fatalf("mremap: %v", err)
		}
		assertBytes(t, "moved range", moved, want[off:off+n])
		assertBytes(t, "before the hole", c.mem[:off], want[:off])
		assertBytes(t, "after the hole", c.mem[off+n:], want[off+n:])
	})
	if err := unix.MunmapPtr(dst, n); err != nil {
		t.Fatal(err)
	}
	endSession(t, ts, c)
	if st := ts.Stats(); st.Remaps != 1 {
		t.Errorf("%d remap events, want 1", st.Remaps)
	}
}

// TestUnmappedRangeIsForgotten unmaps the middle of guest memory and maps fresh memory
// there (not registered, so it must read zeros without the server). The rest is still
// served, and the session ends only when the last registered byte is unmapped.
func TestUnmappedRangeIsForgotten(t *testing.T) {
	const size = 16 << 20
	ts, _ := setup(t, size, Config{MaxSessions: 1})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	requireFeatures(t, c, featureEventUnmap)

	want := expected(0, size)
	const off, n = 6 << 20, 2 << 20
	within(t, 30*time.Second, "unmap and read", func() {
		if err := unix.MunmapPtr(unsafe.Pointer(&c.mem[off]), n); err != nil {
			t.Fatalf("munmap: %v", err)
		}
		if _, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&c.mem[off]), n, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED); err != nil {
			t.Fatalf("map over the hole: %v", err)
		}
		assertBytes(t, "fresh memory in the hole", c.mem[off:off+n], make([]byte, n))
		assertBytes(t, "before the hole", c.mem[:off], want[:off])
		assertBytes(t, "after the hole", c.mem[off+n:], want[off+n:])
	})
	if _, timeout := ts.wait(100 * time.Millisecond); timeout == nil {
		t.Fatal("session ended while registered memory was still mapped")
	}
	endSession(t, ts, c)
	// Two unmaps: the hole, then the rest; nothing was ever copied into the hole.
	if st := ts.Stats(); st.Unmaps != 2 || st.CopiedBytes != size-n {
		t.Errorf("stats %+v: want 2 unmaps and %d bytes copied (none for the hole)", st, size-n)
	}
}

// TestChunkFillStepsOverPresentPages populates scattered pages behind the server's back
// (the client's own UFFDIO_COPY, standing in for an earlier fill or a racing thread), so
// the server's chunk copies stop at EEXIST part way. Every fault must still be served,
// present pages must keep their contents, and the rest must come from the file.
func TestChunkFillStepsOverPresentPages(t *testing.T) {
	const size = 4 << 20
	ts, _ := setup(t, size, Config{MaxSessions: 1})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })

	want := expected(0, size)
	marker := bytes.Repeat([]byte{0xAB}, pageSize)
	present := map[int]bool{}
	// Dense near the start (more than maxExistSkips per chunk) and sparse further on.
	for _, p := range []int{1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 40, 700, 701} {
		present[p] = true
		if _, err := copyRange(c.uffd, c.addr()+uint64(p*pageSize), uint64(uintptr(unsafe.Pointer(&marker[0]))), pageSize); err != nil {
			t.Fatalf("pre-populate page %d: %v", p, err)
		}
		copy(want[p*pageSize:], marker)
	}
	within(t, 30*time.Second, "read around present pages", func() {
		// Fault the pages right before present ones first, then everything.
		for _, p := range []int{0, 4, 39, 699, 702} {
			assertBytes(t, fmt.Sprintf("page %d", p), c.mem[p*pageSize:(p+1)*pageSize], want[p*pageSize:(p+1)*pageSize])
		}
		assertBytes(t, "all memory", c.mem, want)
	})
	endSession(t, ts, c)
	if st := ts.Stats(); st.Exists == 0 {
		t.Errorf("no EEXIST seen: the test did not exercise the fallback (stats %+v)", st)
	}
}

// TestConcurrentFaultsDuringRemoves has several threads fault all over guest memory while
// another keeps removing a range: duplicate faults on one chunk (EEXIST, wake), and fills
// refused with EAGAIN while an event is pending, must all be served. Memory outside the
// removed range must always read as the file.
func TestConcurrentFaultsDuringRemoves(t *testing.T) {
	const size = 32 << 20
	ts, _ := setup(t, size, Config{ChunkSize: 256 << 10, MaxSessions: 1})
	c := connect(t, ts, size, func(c *client) []Region { return []Region{c.region(0, size, 0)} })
	requireFeatures(t, c, featureEventRemove)

	want := expected(0, size)
	const lo, hi = 8 << 20, 12 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	within(t, 45*time.Second, "concurrent faults", func() {
		for w := range 4 {
			wg.Go(func() {
				for i := range size / pageSize {
					p := (i*7919 + w*1237) % (size / pageSize) // each reader walks its own order
					b := p * pageSize
					if b >= lo && b < hi {
						continue
					}
					if !bytes.Equal(c.mem[b:b+pageSize], want[b:b+pageSize]) {
						errs <- fmt.Errorf("reader %d: page %#x differs", w, b)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for range 50 {
				if err := unix.Madvise(c.mem[lo:hi], unix.MADV_DONTNEED); err != nil {
					errs <- err
					return
				}
				helperSink = c.mem[lo+pageSize*3] // fault some of it back in
			}
		})
		wg.Wait()
	})
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assertBytes(t, "removed range", c.mem[lo:hi], make([]byte, hi-lo))
	endSession(t, ts, c)
	t.Logf("stats: %+v", ts.Stats())
}
