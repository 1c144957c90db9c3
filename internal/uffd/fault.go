package uffd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxExistSkips bounds how many already-present pages one fault steps over while filling
// its chunk, so a chunk that is mostly present costs a few ioctls, not one per page.
const maxExistSkips = 16

var hostPageSize = uint64(os.Getpagesize())

// serveFault populates the chunk around addr and makes sure the faulting thread is woken.
// It returns retry=true when the kernel refused with EAGAIN (the address space is changing)
// before the faulting page was filled; the caller must retry later, since the kernel will
// not send the fault again.
//
// The chunk is the ChunkSize-aligned block holding the fault, clipped to the span that
// holds it, so it never crosses from file-backed into removed memory or out of a region.
// The kernel fills a range page by page and stops at the first page already present
// (EEXIST, e.g. filled by an earlier chunk, or a second thread's duplicate fault), so the
// loop steps over such pages. Whatever happens to the chunk, the faulting page itself is
// then filled on its own, or woken if it turns out to be present already.
func (s *session) serveFault(t *target, addr uint64) (retry bool, err error) {
	sp, ok := t.spans.find(addr)
	if !ok {
		return false, fmt.Errorf("fault at %#x outside every known region", addr)
	}
	ps := sp.pageSize
	page := addr &^ (ps - 1)
	chunk := max(s.srv.cfg.ChunkSize, ps)
	block := page &^ (chunk - 1)
	start, end := max(block, sp.start), min(block+chunk, sp.end)

	pageFilled, pagePresent := false, false
	skips := 0
chunkLoop:
	for cur := start; cur < end; {
		n, err := s.fill(t.fd, sp, cur, end-cur)
		if page >= cur && page < cur+n {
			pageFilled = true
		}
		cur += n
		switch {
		case err == nil:
			break chunkLoop
		case errors.Is(err, unix.EAGAIN) && n > 0:
			// Partial fill: the next attempt tells why it stopped.
		case errors.Is(err, unix.EEXIST):
			s.srv.stats.exists.Add(1)
			if cur == page {
				pagePresent = true
			}
			if skips++; skips > maxExistSkips {
				break chunkLoop
			}
			cur += ps
		case errors.Is(err, unix.ESRCH):
			return false, errGone
		default:
			// EAGAIN with nothing filled, or an error the single-page attempt will report.
			break chunkLoop
		}
	}
	if pageFilled {
		return false, nil
	}
	if !pagePresent {
		_, err := s.fill(t.fd, sp, page, ps)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, unix.EAGAIN):
			return true, nil
		case errors.Is(err, unix.ESRCH):
			return false, errGone
		case errors.Is(err, unix.EEXIST):
			s.srv.stats.exists.Add(1)
		case errors.Is(err, unix.ENOENT):
			// The range stopped being registered (unmapped or moved) after the fault was
			// raised. Waking the thread makes it retry against the current mappings.
		default:
			return false, fmt.Errorf("fill page %#x: %w", page, err)
		}
	}
	if err := wakeRange(t.fd, page, ps); err != nil {
		return false, fmt.Errorf("wake page %#x: %w", page, err)
	}
	return false, nil
}

// fill populates [dst, dst+n) of span sp: from the memory file, or with zeros for memory
// the client removed. UFFDIO_ZEROPAGE is cheaper than copying zeros but does not work on
// hugetlbfs, so huge-page regions copy from a zero source instead.
func (s *session) fill(fd int, sp span, dst, n uint64) (uint64, error) {
	if sp.zero {
		if sp.pageSize == hostPageSize {
			got, err := zeroRange(fd, dst, n)
			s.srv.stats.zeroed.Add(got)
			return got, err
		}
		src, err := s.zero.addr(n)
		if err != nil {
			return 0, err
		}
		got, err := copyRange(fd, dst, src, n)
		s.srv.stats.zeroed.Add(got)
		return got, err
	}
	src := s.srv.mem.addr(sp.fileOff + (dst - sp.start))
	got, err := copyRange(fd, dst, src, n)
	s.srv.stats.copied.Add(got)
	return got, err
}
