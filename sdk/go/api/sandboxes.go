package api

import (
	"encoding/json"
	"time"
)

// NewSandbox is the body of POST /sandboxes.
type NewSandbox struct {
	TemplateID string `json:"templateID"`
	Timeout    *int   `json:"timeout,omitempty"` // seconds
	AutoPause  *bool  `json:"autoPause,omitempty"`
	AutoResume *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume,omitempty"`
	Secure              *bool             `json:"secure,omitempty"`
	AllowInternetAccess *bool             `json:"allow_internet_access,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	EnvVars             map[string]string `json:"envVars,omitempty"`
	Network             *SandboxNetwork   `json:"network,omitempty"`
	// AutoPauseMemory false makes the timeout's pause keep only the filesystem (resuming
	// boots the sandbox afresh); it cannot be combined with autoResume. Default true.
	AutoPauseMemory *bool `json:"autoPauseMemory,omitempty"`
	// E2B options Hearth does not implement. A request that sets one is refused: ignoring
	// it would leave the caller believing in a volume, credentials or a gateway that
	// is not there. Other unknown fields are ignored, as the E2B API does.
	VolumeMounts json.RawMessage `json:"volumeMounts,omitempty"`
	MCP          json.RawMessage `json:"mcp,omitempty"`
	IAM          json.RawMessage `json:"iam,omitempty"`
}

// SandboxNetwork is the network option of a new sandbox and the network of
// GET /sandboxes/{id}. Outbound lists hold IPv4 addresses and CIDR ranges; allowOut wins
// over denyOut.
type SandboxNetwork struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
	// AllowPublicTraffic false makes the sandbox's ports require the traffic access token.
	AllowPublicTraffic *bool `json:"allowPublicTraffic,omitempty"`
	// Not implemented by Hearth: refused when set (see NewSandbox).
	EgressProxy     json.RawMessage `json:"egressProxy,omitempty"`
	Rules           json.RawMessage `json:"rules,omitempty"`
	MaskRequestHost *string         `json:"maskRequestHost,omitempty"`
	HTTPSPorts      json.RawMessage `json:"httpsPorts,omitempty"`
}

// NetworkUpdate is the body of PUT /sandboxes/{id}/network. It replaces the outbound
// policy as a whole: an omitted list is cleared and an omitted allow_internet_access
// means true.
type NetworkUpdate struct {
	AllowOut            []string        `json:"allowOut,omitempty"`
	DenyOut             []string        `json:"denyOut,omitempty"`
	AllowInternetAccess *bool           `json:"allow_internet_access,omitempty"`
	EgressProxy         json.RawMessage `json:"egressProxy,omitempty"`
	Rules               json.RawMessage `json:"rules,omitempty"`
}

// Sandbox is the response of create, resume and connect (E2B's Sandbox). The optional
// strings are omitted when empty, as E2B's API leaves them out.
type Sandbox struct {
	TemplateID  string `json:"templateID"`
	SandboxID   string `json:"sandboxID"`
	Alias       string `json:"alias,omitempty"`
	ClientID    string `json:"clientID"` // deprecated in E2B's API; kept for compatibility
	EnvdVersion string `json:"envdVersion"`
	// EnvdAccessToken, when set, must accompany every request to the sandbox's envd.
	EnvdAccessToken string `json:"envdAccessToken,omitempty"`
	// TrafficAccessToken guards the sandbox's other ports when they are not public.
	TrafficAccessToken string `json:"trafficAccessToken,omitempty"`
	Domain             string `json:"domain,omitempty"`
}

// SandboxState is a sandbox's state as the API reports it and list filters take it.
type SandboxState string

// The states the API reports.
const (
	StateRunning SandboxState = "running"
	StatePaused  SandboxState = "paused"
	// StateLost (Hearth-only): the sandbox was running when its host stopped responding; it
	// is running again if the host comes back with it.
	StateLost SandboxState = "lost"
)

// ListedSandbox is one element of GET /v2/sandboxes.
type ListedSandbox struct {
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	SandboxID   string            `json:"sandboxID"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int               `json:"memoryMB"`
	DiskSizeMB  int               `json:"diskSizeMB"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	State       SandboxState      `json:"state"`
	EnvdVersion string            `json:"envdVersion"`
}

// SandboxDetail is GET /sandboxes/{id}.
type SandboxDetail struct {
	ListedSandbox
	EnvdAccessToken string          `json:"envdAccessToken,omitempty"`
	Domain          string          `json:"domain,omitempty"`
	Lifecycle       Lifecycle       `json:"lifecycle"`
	AllowInternet   bool            `json:"allowInternetAccess"`
	Network         *SandboxNetwork `json:"network,omitempty"`
}

// Lifecycle says what happens on timeout.
type Lifecycle struct {
	OnTimeout  string `json:"onTimeout"` // "kill" or "pause"
	AutoResume bool   `json:"autoResume"`
}

// TimeoutBody is POST /sandboxes/{id}/timeout and /connect.
type TimeoutBody struct {
	Timeout *int `json:"timeout,omitempty"`
}

// RefreshBody is POST /sandboxes/{id}/refreshes.
type RefreshBody struct {
	Duration *int `json:"duration,omitempty"`
}

// ResumeBody is the deprecated POST /sandboxes/{id}/resume.
type ResumeBody struct {
	Timeout   *int  `json:"timeout,omitempty"`
	AutoPause *bool `json:"autoPause,omitempty"`
}

// SandboxMetric is one sample of GET /sandboxes/{id}/metrics.
type SandboxMetric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       uint64    `json:"memUsed"`
	MemTotal      uint64    `json:"memTotal"`
	MemCache      uint64    `json:"memCache"`
	DiskUsed      uint64    `json:"diskUsed"`
	DiskTotal     uint64    `json:"diskTotal"`
}

// SandboxLog is one entry of GET /sandboxes/{id}/logs.
type SandboxLog struct {
	Timestamp time.Time         `json:"timestamp"`
	Line      string            `json:"line"`
	Level     string            `json:"level,omitempty"`
	Message   string            `json:"message,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
}

// SandboxLogs is the body of GET /sandboxes/{id}/logs.
type SandboxLogs struct {
	Logs       []SandboxLog `json:"logs"`
	LogEntries []SandboxLog `json:"logEntries"`
}

// Error is E2B's error body.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// PauseBody is POST /sandboxes/{id}/pause (E2B's SandboxPauseRequest).
type PauseBody struct {
	// Memory false keeps only the filesystem: resuming boots the sandbox afresh, and
	// traffic cannot resume it. Default true.
	Memory *bool `json:"memory,omitempty"`
}

// ForkBody is POST /sandboxes/{id}/fork.
type ForkBody struct {
	Timeout *int `json:"timeout,omitempty"` // seconds, for the new sandboxes
	Count   *int `json:"count,omitempty"`   // default 1
}

// ForkResult is one element of the fork's answer: a sandbox, or why one did not start.
type ForkResult struct {
	Sandbox *Sandbox `json:"sandbox,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// SnapshotBody is POST /sandboxes/{id}/snapshots.
type SnapshotBody struct {
	Name string `json:"name,omitempty"`
}

// SnapshotInfo is E2B's snapshot: what create answers and list returns.
type SnapshotInfo struct {
	// SnapshotID is what Sandbox.create and DELETE /templates take: the name when one was
	// given, else the raw ID, with E2B's tag (":default").
	SnapshotID string `json:"snapshotID"`
	// Names are the snapshot's full names (name and tag); empty for an unnamed snapshot.
	Names []string `json:"names"`
}
