package uffd

import (
	"encoding/binary"
	"unsafe"
)

// The userfaultfd ABI from include/uapi/linux/userfaultfd.h. golang.org/x/sys/unix has
// SYS_USERFAULTFD but none of the ioctls or structures, so they are spelled out here.
// Ioctl numbers are _IOC(dir, 0xAA, nr, size): dir 3 (read|write) is 0xC0000000 and
// dir 2 (read) is 0x80000000; the size of the argument struct sits in bits 16..29.

const (
	// ioctlAPI negotiates the API version and features (struct uffdio_api, 24 bytes).
	// Clients call it; the server only needs it in tests that play the client.
	ioctlAPI = 0xC018AA3F
	// ioctlRegister registers a range in a mode (struct uffdio_register, 32 bytes). Client side.
	ioctlRegister = 0xC020AA00
	// ioctlWake wakes threads waiting on a range (struct uffdio_range, 16 bytes, _IOR).
	ioctlWake = 0x8010AA02
	// ioctlCopy atomically fills missing pages from a source buffer (struct uffdio_copy, 40 bytes).
	ioctlCopy = 0xC028AA03
	// ioctlZeropage maps the shared zero page over missing pages (struct uffdio_zeropage, 32 bytes).
	ioctlZeropage = 0xC020AA04
)

// uffdAPI is the only userfaultfd API version the kernel knows.
const uffdAPI = 0xAA

// Event types in uffd_msg.event.
const (
	eventPagefault = 0x12
	eventFork      = 0x13
	eventRemap     = 0x14
	eventRemove    = 0x15
	eventUnmap     = 0x16
)

// Flags in uffd_msg.arg.pagefault.flags (bit 0, WRITE, does not matter to a missing-page
// server). The server registers nothing itself, but a fault raised by write-protect or minor
// mode cannot be served by copying into a missing page.
const (
	pagefaultFlagWP    = 1 << 1
	pagefaultFlagMinor = 1 << 2
)

// Feature bits of struct uffdio_api that matter for Firecracker-style clients.
const (
	featureEventFork   = 1 << 1
	featureEventRemap  = 1 << 2
	featureEventRemove = 1 << 3
	featureEventUnmap  = 1 << 6
)

// registerModeMissing asks for faults on pages that are not present (struct uffdio_register.mode).
const registerModeMissing = 1 << 0

// msgSize is sizeof(struct uffd_msg): the union is padded to 24 bytes and the struct packed.
const msgSize = 32

// uffdioAPI mirrors struct uffdio_api.
type uffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// uffdioRange mirrors struct uffdio_range.
type uffdioRange struct {
	Start uint64
	Len   uint64
}

// uffdioRegister mirrors struct uffdio_register.
type uffdioRegister struct {
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

// uffdioCopy mirrors struct uffdio_copy. Copy is written back by the kernel: bytes copied,
// or a negative errno when nothing was.
type uffdioCopy struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64
}

// uffdioZeropage mirrors struct uffdio_zeropage; Zeropage has the same meaning as uffdioCopy.Copy.
type uffdioZeropage struct {
	Range    uffdioRange
	Mode     uint64
	Zeropage int64
}

// Compile-time checks that the Go layouts match the sizes encoded in the ioctl numbers.
var (
	_ [24 - unsafe.Sizeof(uffdioAPI{})]byte
	_ [unsafe.Sizeof(uffdioAPI{}) - 24]byte
	_ [16 - unsafe.Sizeof(uffdioRange{})]byte
	_ [unsafe.Sizeof(uffdioRange{}) - 16]byte
	_ [32 - unsafe.Sizeof(uffdioRegister{})]byte
	_ [unsafe.Sizeof(uffdioRegister{}) - 32]byte
	_ [40 - unsafe.Sizeof(uffdioCopy{})]byte
	_ [unsafe.Sizeof(uffdioCopy{}) - 40]byte
	_ [32 - unsafe.Sizeof(uffdioZeropage{})]byte
	_ [unsafe.Sizeof(uffdioZeropage{}) - 32]byte
)

// msg is a decoded struct uffd_msg. Only the fields of the union that belong to Event are set.
type msg struct {
	Event uint8
	// Pagefault.
	Flags   uint64
	Address uint64
	// Fork: the new userfaultfd, already installed in this process by read(2).
	UFD int
	// Remap.
	From, To, Len uint64
	// Remove and unmap.
	Start, End uint64
}

// decodeMsg decodes one 32-byte uffd_msg (event at byte 0, the union at byte 8).
func decodeMsg(b []byte) msg {
	u64 := func(off int) uint64 { return binary.NativeEndian.Uint64(b[off:]) }
	m := msg{Event: b[0]}
	switch m.Event {
	case eventPagefault:
		m.Flags, m.Address = u64(8), u64(16)
	case eventFork:
		m.UFD = int(int32(binary.NativeEndian.Uint32(b[8:])))
	case eventRemap:
		m.From, m.To, m.Len = u64(8), u64(16), u64(24)
	case eventRemove, eventUnmap:
		m.Start, m.End = u64(8), u64(16)
	}
	return m
}
