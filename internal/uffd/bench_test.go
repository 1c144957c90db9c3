package uffd

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	benchFileOnce sync.Once
	benchFile     string
	benchDir      string
)

// BenchmarkRestore1GiB measures how fast a client's memory is restored through the server:
// each iteration registers 1 GiB of fresh guest memory and touches every page once in
// order, like a guest walking its memory after a restore, from a 1 GiB memory file in the
// page cache. Run it with a small, fixed count, e.g.
//
//	go test -run '^$' -bench Restore1GiB -benchtime 3x ./internal/uffd/
//
// since one iteration of the 4 KiB case takes seconds.
func BenchmarkRestore1GiB(b *testing.B) {
	availableFeatures(b)
	const size = 1 << 30
	benchFileOnce.Do(func() {
		dir, err := os.MkdirTemp("", "uffdbench")
		if err != nil {
			b.Fatal(err)
		}
		benchDir, benchFile = dir, filepath.Join(dir, "mem")
		writeMemFile(b, benchFile, size)
	})
	b.Cleanup(func() { os.RemoveAll(benchDir) })

	for _, chunk := range []uint64{4 << 10, 64 << 10, DefaultChunkSize} {
		name := fmt.Sprintf("chunk=%dKiB", chunk>>10)
		if chunk == DefaultChunkSize {
			name += "(default)"
		}
		b.Run(name, func(b *testing.B) {
			dir := shortTempDir(b)
			ts := startServer(b, dir, benchFile, Config{ChunkSize: chunk, Logger: discardLogger()})
			var touched time.Duration
			for b.Loop() {
				touched += restoreOnce(b, ts, size)
			}
			mib := float64(size>>20) * float64(b.N)
			b.ReportMetric(mib/touched.Seconds(), "MiB/s")
			b.ReportMetric(float64(touched.Microseconds())/float64(size/pageSize*b.N), "µs/page")
		})
	}
}

// restoreOnce runs one session and returns how long touching every page took.
func restoreOnce(b *testing.B, ts *testServer, size int) time.Duration {
	b.StopTimer()
	c := newClient(b, size)
	defer c.close()
	c.send(b, ts.socket, []Region{c.region(0, uint64(size), 0)})
	b.StartTimer()
	start := time.Now()
	var sum byte
	within(b, 60*time.Second, "touch 1 GiB", func() {
		for off := 0; off < size; off += pageSize {
			sum += c.mem[off]
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	helperSink = sum
	// Check a sample so a fast but wrong server cannot post a number.
	for _, off := range []int{0, size/2 + 3*pageSize, size - pageSize} {
		if string(c.mem[off:off+64]) != string(expected(off, 64)) {
			b.Fatalf("page at %#x has wrong contents", off)
		}
	}
	c.unmapAll(b) // ends the session on the server's side
	b.StartTimer()
	return elapsed
}
