package hearth

import (
	"time"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// SandboxState is a sandbox's state as the API reports it.
type SandboxState string

// The states the API reports and list filters accept.
const (
	StateRunning SandboxState = "running"
	StatePaused  SandboxState = "paused"
	// StateLost (Hearth-only): the sandbox was running when its host stopped responding; it
	// is running again if the host comes back with it.
	StateLost SandboxState = "lost"
)

// CreatedSandbox is the API's answer to create, connect and resume (E2B's Sandbox schema).
type CreatedSandbox struct {
	SandboxID  string `json:"sandboxID"`
	TemplateID string `json:"templateID"`
	Alias      string `json:"alias,omitempty"`
	// ClientID is deprecated in E2B's API and kept for compatibility.
	ClientID    string `json:"clientID"`
	EnvdVersion string `json:"envdVersion"`
	// EnvdAccessToken, when set, must accompany every request to the sandbox's envd; the
	// Sandbox handle sends it.
	EnvdAccessToken string `json:"envdAccessToken,omitempty"`
	// TrafficAccessToken guards the sandbox's other ports when it is not public.
	TrafficAccessToken string `json:"trafficAccessToken,omitempty"`
	Domain             string `json:"domain,omitempty"`
}

// SandboxInfo describes a sandbox, as GET /sandboxes/{id} and the list return it (E2B's
// SandboxDetail and ListedSandbox; the list leaves EnvdAccessToken and Domain empty).
type SandboxInfo struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int               `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	State           SandboxState      `json:"state"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          string            `json:"domain,omitempty"`
	// AllowInternetAccess and Network are set by GET /sandboxes/{id} only.
	AllowInternetAccess *bool           `json:"allowInternetAccess,omitempty"`
	Network             *NetworkOptions `json:"network,omitempty"`
}

// Template describes a template sandboxes can be created from (an element of GET
// /templates).
type Template = api.Template
