package uffd

import (
	"reflect"
	"testing"
)

// TestSpanTable checks that the table follows the client's memory operations: where each
// address's contents come from after removes, unmaps and remaps.
func TestSpanTable(t *testing.T) {
	const p = 4096
	base := []Region{{BaseHostVirtAddr: 100 * p, Size: 10 * p, Offset: 50 * p, PageSize: p}}
	file := func(start, end, fileOff uint64) span {
		return span{start: start * p, end: end * p, pageSize: p, fileOff: fileOff * p}
	}
	zero := func(start, end uint64) span { return span{start: start * p, end: end * p, pageSize: p, zero: true} }
	tests := []struct {
		name string
		ops  func(*spanTable)
		want spanTable
	}{
		{"initial", func(*spanTable) {}, spanTable{file(100, 110, 50)}},
		{"remove middle", func(t *spanTable) { t.zero(103*p, 105*p) },
			spanTable{file(100, 103, 50), zero(103, 105), file(105, 110, 55)}},
		{"adjacent removes merge", func(t *spanTable) { t.zero(103*p, 104*p); t.zero(104*p, 106*p) },
			spanTable{file(100, 103, 50), zero(103, 106), file(106, 110, 56)}},
		{"remove beyond the region is clipped", func(t *spanTable) { t.zero(90*p, 102*p) },
			spanTable{zero(100, 102), file(102, 110, 52)}},
		{"unmap middle", func(t *spanTable) { t.drop(104*p, 106*p) },
			spanTable{file(100, 104, 50), file(106, 110, 56)}},
		{"remap keeps file offsets and zeros", func(t *spanTable) { t.zero(108*p, 109*p); t.move(106*p, 200*p, 4*p) },
			spanTable{file(100, 106, 50), file(200, 202, 56), zero(202, 203), file(203, 204, 59)}},
		{"remap back rejoins", func(t *spanTable) { t.move(104*p, 300*p, 2*p); t.move(300*p, 104*p, 2*p) },
			spanTable{file(100, 110, 50)}},
		{"unmap everything", func(t *spanTable) { t.drop(0, 1<<40) }, spanTable{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := newSpanTable(base)
			tt.ops(&tab)
			if len(tab) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(tab, tt.want) {
				t.Errorf("table = %+v\nwant    %+v", tab, tt.want)
			}
		})
	}
}

func TestSpanTableFind(t *testing.T) {
	tab := newSpanTable([]Region{
		{BaseHostVirtAddr: 0x10000, Size: 0x2000, Offset: 0x2000, PageSize: 0x1000},
		{BaseHostVirtAddr: 0x20000, Size: 0x1000, Offset: 0, PageSize: 0x1000},
	})
	tests := []struct {
		addr    uint64
		found   bool
		fileOff uint64
	}{
		{0xffff, false, 0}, {0x10000, true, 0x2000}, {0x11fff, true, 0x2000}, {0x12000, false, 0},
		{0x20000, true, 0}, {0x21000, false, 0},
	}
	for _, tt := range tests {
		s, ok := tab.find(tt.addr)
		if ok != tt.found || (ok && s.fileOff != tt.fileOff) {
			t.Errorf("find(%#x) = %+v, %v; want found=%v fileOff=%#x", tt.addr, s, ok, tt.found, tt.fileOff)
		}
	}
}
