package api

// Request and response bodies, field for field as Firecracker's API defines them (swagger
// 1.17.0-dev). Optional fields are pointers or omitempty so that a zero value is never sent
// where Firecracker would read it as a setting: an explicit `"smt": false` is harmless, but
// an explicit `"one_time_burst": 0` or `"stats_polling_interval_s": 0` changes behaviour.

// MachineConfig is the body of PUT /machine-config.
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt,omitempty"`
	// TrackDirtyPages enables KVM dirty-page logging, needed only for Diff snapshots.
	TrackDirtyPages bool `json:"track_dirty_pages,omitempty"`
	// HugePages is "None", "Transparent" or "2M"; empty leaves Firecracker's default (None).
	HugePages string `json:"huge_pages,omitempty"`
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id} for a virtio-block drive.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	// CacheType is "Unsafe" (default) or "Writeback".
	CacheType string `json:"cache_type,omitempty"`
	// IOEngine is "Sync" (default) or "Async".
	IOEngine    string       `json:"io_engine,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// TokenBucket limits one kind of token (bytes or operations). The bucket holds Size tokens
// and refills from empty to full in RefillTimeMs, so the sustained rate is
// Size*1000/RefillTimeMs per second; OneTimeBurst is extra budget spent before refilling
// starts.
type TokenBucket struct {
	Size         int64  `json:"size"`
	RefillTimeMs int64  `json:"refill_time"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
}

// RateLimiter pairs a bandwidth (bytes) and an operations bucket; either may be absent.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}. Rx and Tx are seen
// from the guest: TxRateLimiter limits what the guest sends.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Balloon is the body of PUT /balloon and the answer of GET /balloon.
type Balloon struct {
	AmountMiB    int  `json:"amount_mib"`
	DeflateOnOOM bool `json:"deflate_on_oom"`
	// StatsPollingIntervalS enables statistics when non-zero; it can only be changed after
	// boot, never turned on or off.
	StatsPollingIntervalS int  `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       bool `json:"free_page_hinting,omitempty"`
	FreePageReporting     bool `json:"free_page_reporting,omitempty"`
}

// BalloonUpdate is the body of PATCH /balloon.
type BalloonUpdate struct {
	AmountMiB int `json:"amount_mib"`
}

// BalloonStatsUpdate is the body of PATCH /balloon/statistics.
type BalloonStatsUpdate struct {
	StatsPollingIntervalS int `json:"stats_polling_interval_s"`
}

// BalloonStats is the answer of GET /balloon/statistics. Fields the guest driver does not
// report are absent and read as zero.
type BalloonStats struct {
	TargetPages        int64 `json:"target_pages"`
	ActualPages        int64 `json:"actual_pages"`
	TargetMiB          int64 `json:"target_mib"`
	ActualMiB          int64 `json:"actual_mib"`
	SwapIn             int64 `json:"swap_in,omitempty"`
	SwapOut            int64 `json:"swap_out,omitempty"`
	MajorFaults        int64 `json:"major_faults,omitempty"`
	MinorFaults        int64 `json:"minor_faults,omitempty"`
	FreeMemory         int64 `json:"free_memory,omitempty"`
	TotalMemory        int64 `json:"total_memory,omitempty"`
	AvailableMemory    int64 `json:"available_memory,omitempty"`
	DiskCaches         int64 `json:"disk_caches,omitempty"`
	HugetlbAllocations int64 `json:"hugetlb_allocations,omitempty"`
	HugetlbFailures    int64 `json:"hugetlb_failures,omitempty"`
}

// VM states accepted by PATCH /vm.
const (
	StatePaused  = "Paused"
	StateResumed = "Resumed"
)

// VM is the body of PATCH /vm.
type VM struct {
	State string `json:"state"`
}

// Snapshot types of PUT /snapshot/create.
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreate is the body of PUT /snapshot/create. Paths are as Firecracker sees them
// (inside the chroot when jailed).
type SnapshotCreate struct {
	SnapshotType string `json:"snapshot_type,omitempty"`
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// Memory backend types of PUT /snapshot/load.
const (
	BackendFile = "File"
	BackendUffd = "Uffd"
)

// MemoryBackend says where a restored VM's memory comes from: a file Firecracker maps, or
// (Uffd) the Unix socket of a page-fault server.
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// SnapshotLoad is the body of PUT /snapshot/load. Only logger and metrics may be
// configured before it on a fresh Firecracker process.
type SnapshotLoad struct {
	SnapshotPath string         `json:"snapshot_path"`
	MemBackend   *MemoryBackend `json:"mem_backend,omitempty"`
	// EnableDiffSnapshots is the deprecated spelling of track_dirty_pages; Hearth always
	// sends false since it only takes Full snapshots.
	EnableDiffSnapshots bool `json:"enable_diff_snapshots"`
	ResumeVM            bool `json:"resume_vm"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart = "InstanceStart"
	ActionFlushMetrics  = "FlushMetrics"
)

// Action is the body of PUT /actions.
type Action struct {
	ActionType string `json:"action_type"`
}

// Metrics is the body of PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MMDS versions of PUT /mmds/config.
const (
	MMDSv1 = "V1"
	MMDSv2 = "V2"
)

// MMDSConfig is the body of PUT /mmds/config.
type MMDSConfig struct {
	Version           string   `json:"version,omitempty"`
	NetworkInterfaces []string `json:"network_interfaces"`
	IPv4Address       string   `json:"ipv4_address,omitempty"`
}

// Entropy is the body of PUT /entropy (a virtio-rng device).
type Entropy struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}
