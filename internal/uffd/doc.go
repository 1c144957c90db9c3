// Package uffd is Hearth's userfaultfd memory server: it serves a restored microVM's guest
// memory from a snapshot's memory file, on demand, the way Firecracker's Uffd memory backend
// expects.
//
// Firecracker maps guest memory anonymously, registers it with a userfaultfd in missing
// mode, connects to the server's Unix socket and sends a JSON array of regions
// (base_host_virt_addr, size, offset, page_size) with the userfaultfd attached as
// SCM_RIGHTS. From then on every first touch of a guest page, by a vCPU, by KVM or by
// Firecracker's own threads, blocks until the server fills the page with UFFDIO_COPY.
//
// The server populates an aligned chunk (DefaultChunkSize) per fault rather than one page,
// because each round trip costs far more than the copy. It follows the client's changes to
// its memory: ranges removed by madvise(MADV_DONTNEED), which the balloon does, read as
// zeros afterwards and never as stale file contents; unmapped ranges are forgotten; remapped
// ranges are served at their new address; a forked child's userfaultfd is served with the
// parent's view. When it cannot go on it kills the client, since a VM whose faults are never
// answered hangs forever.
package uffd
