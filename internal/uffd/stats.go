package uffd

import "sync/atomic"

// Stats counts what a server did across all its sessions. Tests and the agent's metrics read
// it; every field only grows.
type Stats struct {
	Sessions    uint64 // clients that handed over a userfaultfd
	Faults      uint64 // page-fault messages handled
	CopiedBytes uint64 // bytes populated from the memory file
	ZeroedBytes uint64 // bytes populated with zeros because the client had removed them
	Exists      uint64 // EEXIST answers: the page was already present
	Retries     uint64 // faults deferred because the address space was changing (EAGAIN)
	Removes     uint64 // UFFD_EVENT_REMOVE events
	Unmaps      uint64 // UFFD_EVENT_UNMAP events
	Remaps      uint64 // UFFD_EVENT_REMAP events
	Forks       uint64 // UFFD_EVENT_FORK events (child userfaultfds served)
	Killed      uint64 // peers killed after a fatal error
}

type counters struct {
	sessions, faults, copied, zeroed, exists, retries atomic.Uint64
	removes, unmaps, remaps, forks, killed            atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Sessions: c.sessions.Load(), Faults: c.faults.Load(), CopiedBytes: c.copied.Load(),
		ZeroedBytes: c.zeroed.Load(), Exists: c.exists.Load(), Retries: c.retries.Load(),
		Removes: c.removes.Load(), Unmaps: c.unmaps.Load(), Remaps: c.remaps.Load(),
		Forks: c.forks.Load(), Killed: c.killed.Load(),
	}
}
