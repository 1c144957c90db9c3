package microvm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"syscall"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks as an initramfs. Go's standard
// library has no cpio writer and busybox's needs a staging tree on disk; this one also writes
// /dev/console as a device node without mknod.
type cpioWriter struct {
	w   *bufio.Writer
	ino uint32
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: bufio.NewWriter(w), ino: 1} }

// entry writes one header, name and data; rdev is (major, minor) for device nodes.
func (c *cpioWriter) entry(name string, mode uint32, data []byte, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir, File, CharDev and Symlink add entries; parents must be added first.
func (c *cpioWriter) Dir(name string) { c.entry(name, syscall.S_IFDIR|0o755, nil, 0, 0) }
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, syscall.S_IFREG|perm, data, 0, 0)
}
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, syscall.S_IFCHR|perm, nil, major, minor)
}

// FileFrom adds the host file src as name.
func (c *cpioWriter) FileFrom(name string, perm uint32, src string) {
	b, err := os.ReadFile(src)
	if err != nil && c.err == nil {
		c.err = err
	}
	c.File(name, perm, b)
}

// Close writes the trailer and flushes.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}
