package uffd

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
)

// Region is one guest memory region as Firecracker describes it in the handshake: the
// client's mapping [BaseHostVirtAddr, BaseHostVirtAddr+Size) holds bytes
// [Offset, Offset+Size) of the memory file, in pages of PageSize bytes.
type Region struct {
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	Size             uint64 `json:"size"`
	Offset           uint64 `json:"offset"`
	PageSize         uint64 `json:"page_size"`
}

// wireRegion accepts both spellings of the page size. Firecracker before 1.7 sent
// page_size_kib, which despite its name carried bytes (4096 for normal pages); later
// versions send page_size. A page_size_kib small enough to be a real KiB count (4, 2048)
// is converted, so either reading of the old field works.
type wireRegion struct {
	BaseHostVirtAddr uint64  `json:"base_host_virt_addr"`
	Size             uint64  `json:"size"`
	Offset           uint64  `json:"offset"`
	PageSize         *uint64 `json:"page_size"`
	PageSizeKiB      *uint64 `json:"page_size_kib"`
}

// ParseMappings decodes and validates the JSON array of regions a client sends. Regions
// must be page aligned, non-empty and must not overlap.
func ParseMappings(data []byte) ([]Region, error) {
	var wire []wireRegion
	if err := json.Unmarshal(data, &wire); err != nil {
		return nil, fmt.Errorf("decode region mappings: %w", err)
	}
	if len(wire) == 0 {
		return nil, errors.New("decode region mappings: no regions")
	}
	regions := make([]Region, 0, len(wire))
	for i, w := range wire {
		r := Region{BaseHostVirtAddr: w.BaseHostVirtAddr, Size: w.Size, Offset: w.Offset}
		switch {
		case w.PageSize != nil:
			r.PageSize = *w.PageSize
		case w.PageSizeKiB != nil && *w.PageSizeKiB < uint64(os.Getpagesize()):
			r.PageSize = *w.PageSizeKiB * 1024
		case w.PageSizeKiB != nil:
			r.PageSize = *w.PageSizeKiB
		}
		if r.PageSize == 0 {
			r.PageSize = uint64(os.Getpagesize())
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("region %d: %w", i, err)
		}
		regions = append(regions, r)
	}
	for i := range regions {
		for j := i + 1; j < len(regions); j++ {
			a, b := regions[i], regions[j]
			if a.BaseHostVirtAddr < b.end() && b.BaseHostVirtAddr < a.end() {
				return nil, fmt.Errorf("regions %d and %d overlap", i, j)
			}
		}
	}
	return regions, nil
}

func (r Region) end() uint64 { return r.BaseHostVirtAddr + r.Size }

func (r Region) validate() error {
	ps := r.PageSize
	switch {
	case bits.OnesCount64(ps) != 1 || ps < uint64(os.Getpagesize()):
		return fmt.Errorf("page size %d is not a power of two of at least the host page size", ps)
	case r.Size == 0:
		return errors.New("empty region")
	case r.BaseHostVirtAddr%ps != 0 || r.Size%ps != 0 || r.Offset%ps != 0:
		return fmt.Errorf("address %#x, size %#x or offset %#x not aligned to page size %#x",
			r.BaseHostVirtAddr, r.Size, r.Offset, ps)
	case r.BaseHostVirtAddr+r.Size < r.BaseHostVirtAddr || r.Offset+r.Size < r.Offset:
		return errors.New("region wraps around the address space")
	}
	return nil
}
