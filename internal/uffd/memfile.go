package uffd

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memFile is the snapshot's memory file mapped read-only into the server. UFFDIO_COPY reads
// its source from our address space, so mapping the file lets the kernel copy straight from
// the page cache into the client without a read(2) into a buffer first. Several sessions
// restoring the same snapshot share one mapping.
type memFile struct {
	path string
	data []byte
}

func openMemFile(path string) (*memFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open memory file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat memory file %s: %w", path, err)
	}
	if st.Size() <= 0 {
		return nil, fmt.Errorf("memory file %s is empty", path)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map memory file %s: %w", path, err)
	}
	return &memFile{path: path, data: data}, nil
}

func (m *memFile) size() uint64 { return uint64(len(m.data)) }

// addr is the address in this process of byte off of the file.
func (m *memFile) addr(off uint64) uint64 {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))) + off
}

func (m *memFile) close() error {
	if m.data == nil {
		return nil
	}
	err := unix.Munmap(m.data)
	m.data = nil
	return err
}

// zeroSource is a read-only anonymous mapping used as the source of UFFDIO_COPY when a
// removed range must be zero-filled but UFFDIO_ZEROPAGE cannot be used (hugetlbfs pages).
// Never written, it costs no memory: reads map the shared zero page.
type zeroSource struct{ data []byte }

// addr returns the address of at least n zero bytes.
func (z *zeroSource) addr(n uint64) (uint64, error) {
	if uint64(len(z.data)) < n {
		z.close()
		data, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return 0, fmt.Errorf("map %d zero bytes: %w", n, err)
		}
		z.data = data
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(z.data)))), nil
}

func (z *zeroSource) close() {
	if z.data != nil {
		_ = unix.Munmap(z.data)
		z.data = nil
	}
}
