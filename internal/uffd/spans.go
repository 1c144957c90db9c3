package uffd

import "sort"

// span is a piece of a client's address space and where its contents come from. The
// table of spans starts as the handshake's regions and then follows what the client does
// to its memory: madvise(MADV_DONTNEED) turns a piece into zeros, munmap drops it, mremap
// moves it.
type span struct {
	start, end uint64 // [start, end), client virtual addresses
	pageSize   uint64
	zero       bool   // removed by the client: its next faults get zeros, never the file
	fileOff    uint64 // offset in the memory file of start; unused when zero
}

// spanTable is sorted by start and has no overlaps. Adjacent spans that could be one are
// merged, so balloon traffic that zeroes many neighbouring pages does not fragment it.
type spanTable []span

func newSpanTable(regions []Region) spanTable {
	t := make(spanTable, 0, len(regions))
	for _, r := range regions {
		t = append(t, span{start: r.BaseHostVirtAddr, end: r.end(), pageSize: r.PageSize, fileOff: r.Offset})
	}
	t.normalize()
	return t
}

// find returns the span that contains addr.
func (t spanTable) find(addr uint64) (span, bool) {
	i := sort.Search(len(t), func(i int) bool { return t[i].end > addr })
	if i < len(t) && t[i].start <= addr {
		return t[i], true
	}
	return span{}, false
}

// clone copies the table for a forked child, whose address space starts as the parent's.
func (t spanTable) clone() spanTable { return append(spanTable(nil), t...) }

// size is the number of bytes the table still describes.
func (t spanTable) size() uint64 {
	var n uint64
	for _, s := range t {
		n += s.end - s.start
	}
	return n
}

// split makes addr a boundary between spans if it falls inside one.
func (t *spanTable) split(addr uint64) {
	i := sort.Search(len(*t), func(i int) bool { return (*t)[i].end > addr })
	if i == len(*t) || (*t)[i].start >= addr {
		return
	}
	s := (*t)[i]
	left, right := s, s
	left.end = addr
	right.start = addr
	if !s.zero {
		right.fileOff = s.fileOff + (addr - s.start)
	}
	*t = append(*t, span{})
	copy((*t)[i+2:], (*t)[i+1:])
	(*t)[i], (*t)[i+1] = left, right
}

// cut splits at start and end and returns the index range of the spans inside [start, end).
func (t *spanTable) cut(start, end uint64) (lo, hi int) {
	t.split(start)
	t.split(end)
	lo = sort.Search(len(*t), func(i int) bool { return (*t)[i].start >= start })
	hi = sort.Search(len(*t), func(i int) bool { return (*t)[i].start >= end })
	return lo, hi
}

// zero marks [start, end) as removed: served with zeros from now on.
func (t *spanTable) zero(start, end uint64) {
	lo, hi := t.cut(start, end)
	for i := lo; i < hi; i++ {
		(*t)[i].zero = true
		(*t)[i].fileOff = 0
	}
	t.normalize()
}

// drop forgets [start, end) and returns what it held.
func (t *spanTable) drop(start, end uint64) []span {
	lo, hi := t.cut(start, end)
	gone := append([]span(nil), (*t)[lo:hi]...)
	*t = append((*t)[:lo], (*t)[hi:]...)
	t.normalize()
	return gone
}

// move re-addresses [from, from+n) to start at to, as mremap did in the client. Whatever the
// table held at the destination is replaced.
func (t *spanTable) move(from, to, n uint64) {
	moved := t.drop(from, from+n)
	t.drop(to, to+n)
	for _, s := range moved {
		s.start = s.start - from + to
		s.end = s.end - from + to
		*t = append(*t, s)
	}
	t.normalize()
}

// normalize sorts the table and merges neighbours that describe one contiguous source.
func (t *spanTable) normalize() {
	s := *t
	sort.Slice(s, func(i, j int) bool { return s[i].start < s[j].start })
	out := s[:0]
	for _, sp := range s {
		if sp.start == sp.end {
			continue
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			contiguous := last.end == sp.start && last.pageSize == sp.pageSize && last.zero == sp.zero &&
				(sp.zero || last.fileOff+(last.end-last.start) == sp.fileOff)
			if contiguous {
				last.end = sp.end
				continue
			}
		}
		out = append(out, sp)
	}
	*t = out
}
