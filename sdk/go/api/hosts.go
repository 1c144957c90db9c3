package api

import "time"

// HostInfo is one element of GET /hearth/v1/hosts (Hearth-only).
type HostInfo struct {
	ID                 string    `json:"id"`
	State              string    `json:"state"`
	Runtime            string    `json:"runtime"`
	RPCAddr            string    `json:"rpcAddr"`
	ProxyAddr          string    `json:"proxyAddr"`
	CPUs               int       `json:"cpus"`
	Draining           bool      `json:"draining"`
	MemoryTotalMiB     int64     `json:"memoryTotalMiB"`
	MemoryAvailableMiB int64     `json:"memoryAvailableMiB"`
	MemoryCommittedMiB int64     `json:"memoryCommittedMiB"`
	SandboxesRunning   int       `json:"sandboxesRunning"`
	SandboxesPaused    int       `json:"sandboxesPaused"`
	LastHeartbeat      time.Time `json:"lastHeartbeat"`
}

// DrainResult is the answer of POST /hearth/v1/hosts/{id}/drain (Hearth-only).
type DrainResult struct {
	HostID string `json:"hostID"`
	// Paused are the sandboxes the drain paused; they resume, on their next use, on this
	// host: snapshots do not move between hosts yet.
	Paused []string `json:"paused"`
	// Failed are the running sandboxes that could not be paused (a runtime without
	// snapshots, a timeout); they keep running there.
	Failed []DrainFailure `json:"failed"`
}

// DrainFailure says why one sandbox was not paused.
type DrainFailure struct {
	SandboxID string `json:"sandboxID"`
	Error     string `json:"error"`
}
