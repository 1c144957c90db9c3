package uffd

import (
	"reflect"
	"testing"
)

func TestParseMappings(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    []Region
		wantErr bool
	}{
		{
			name: "page_size in bytes (Firecracker >= 1.7)",
			json: `[{"base_host_virt_addr":1048576,"size":8192,"offset":0,"page_size":4096}]`,
			want: []Region{{BaseHostVirtAddr: 1 << 20, Size: 8192, Offset: 0, PageSize: 4096}},
		},
		{
			name: "page_size_kib carrying bytes (Firecracker < 1.7)",
			json: `[{"base_host_virt_addr":4194304,"size":4194304,"offset":2097152,"page_size_kib":2097152}]`,
			want: []Region{{BaseHostVirtAddr: 4 << 20, Size: 4 << 20, Offset: 2 << 20, PageSize: 2 << 20}},
		},
		{
			name: "page_size_kib carrying KiB",
			json: `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size_kib":4}]`,
			want: []Region{{BaseHostVirtAddr: 4096, Size: 4096, PageSize: 4096}},
		},
		{
			name: "page_size wins over page_size_kib",
			json: `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":2097152}]`,
			want: []Region{{BaseHostVirtAddr: 4096, Size: 4096, PageSize: 4096}},
		},
		{
			name: "no page size means host pages; several regions",
			json: `[{"base_host_virt_addr":4096,"size":4096,"offset":4096},{"base_host_virt_addr":65536,"size":8192,"offset":0}]`,
			want: []Region{{BaseHostVirtAddr: 4096, Size: 4096, Offset: 4096, PageSize: 4096}, {BaseHostVirtAddr: 65536, Size: 8192, PageSize: 4096}},
		},
		{name: "not JSON", json: `{"base_host_virt_addr":`, wantErr: true},
		{name: "empty array", json: `[]`, wantErr: true},
		{name: "empty region", json: `[{"base_host_virt_addr":4096,"size":0,"offset":0,"page_size":4096}]`, wantErr: true},
		{name: "unaligned address", json: `[{"base_host_virt_addr":4097,"size":4096,"offset":0,"page_size":4096}]`, wantErr: true},
		{name: "size not a page multiple", json: `[{"base_host_virt_addr":4096,"size":100,"offset":0,"page_size":4096}]`, wantErr: true},
		{name: "page size not a power of two", json: `[{"base_host_virt_addr":0,"size":12288,"offset":0,"page_size":12288}]`, wantErr: true},
		{name: "wraps around", json: `[{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0,"page_size":4096}]`, wantErr: true},
		{
			name:    "overlapping regions",
			json:    `[{"base_host_virt_addr":4096,"size":8192,"offset":0},{"base_host_virt_addr":8192,"size":4096,"offset":8192}]`,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMappings([]byte(tt.json))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMappings error = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseMappings = %+v, want %+v", got, tt.want)
			}
		})
	}
}
