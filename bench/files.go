package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

const filesDefinition = "one 100 MB file (pseudo-random bytes) written with Files.Write from memory and read " +
	"back with Files.Read into nothing, through the public proxy; MB/s = 10^6 bytes per second, " +
	"median of 3."

func runFiles(ctx context.Context, t *target, size int64, s *Section) error {
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(data)
	const path = "/home/user/bench-100mb.bin"
	var up, down []float64
	for i := range 3 {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		start := time.Now()
		if _, err := t.sb.Files.Write(fctx, path, bytes.NewReader(data), nil); err != nil {
			cancel()
			return fmt.Errorf("write %d: %w", i, err)
		}
		up = append(up, mbps(size, time.Since(start)))
		start = time.Now()
		rc, err := t.sb.Files.Read(fctx, path, nil)
		if err != nil {
			cancel()
			return fmt.Errorf("read %d: %w", i, err)
		}
		n, err := io.CopyBuffer(io.Discard, rc, make([]byte, 256<<10))
		rc.Close()
		el := time.Since(start)
		cancel()
		if err != nil {
			return fmt.Errorf("read %d: %w", i, err)
		}
		if n != size {
			return fmt.Errorf("read %d: got %d bytes, want %d", i, n, size)
		}
		down = append(down, mbps(n, el))
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := t.sb.Files.Remove(rctx, path, nil); err != nil {
		return fmt.Errorf("remove test file: %w", err)
	}
	s.add("upload (Files.Write)", median(up), "MB/s")
	s.add("download (Files.Read)", median(down), "MB/s")
	return nil
}
