package uffd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls below populate or wake a range of a client's address space through its
// userfaultfd. Copy and zeropage report how many bytes they populated even when they fail
// part way: the kernel stops at the first page it cannot fill (EEXIST: already present) or
// when the address space starts changing under it (EAGAIN), and turns a partial success
// into EAGAIN with the byte count in the struct.

// copyRange fills [dst, dst+n) with n bytes read from src (an address in this process).
// It returns the number of bytes populated and the errno, if any.
func copyRange(fd int, dst, src, n uint64) (uint64, error) {
	c := uffdioCopy{Dst: dst, Src: src, Len: n}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlCopy, uintptr(unsafe.Pointer(&c)))
	return populated(c.Copy, errno)
}

// zeroRange maps the zero page over the missing pages of [dst, dst+n).
func zeroRange(fd int, dst, n uint64) (uint64, error) {
	z := uffdioZeropage{Range: uffdioRange{Start: dst, Len: n}}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlZeropage, uintptr(unsafe.Pointer(&z)))
	return populated(z.Zeropage, errno)
}

// wakeRange wakes the threads blocked on faults in [start, start+n), for pages that are
// already present (we got EEXIST) or whose mapping went away.
func wakeRange(fd int, start, n uint64) error {
	r := uffdioRange{Start: start, Len: n}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlWake, uintptr(unsafe.Pointer(&r)))
	if errno != 0 {
		return errno
	}
	return nil
}

// populated turns the kernel's (count, errno) pair into bytes filled and a Go error.
func populated(count int64, errno unix.Errno) (uint64, error) {
	var n uint64
	if count > 0 {
		n = uint64(count)
	}
	if errno != 0 {
		return n, errno
	}
	return n, nil
}
