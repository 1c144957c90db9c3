package hearth

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Host is one host agent as GET /hearth/v1/hosts shows it (Hearth-only; the operator's
// team only).
type Host struct {
	ID                 string    `json:"id"`
	State              string    `json:"state"` // "ready" or "down"
	Draining           bool      `json:"draining"`
	Runtime            string    `json:"runtime"`
	RPCAddr            string    `json:"rpcAddr"`
	ProxyAddr          string    `json:"proxyAddr"`
	CPUs               int       `json:"cpus"`
	MemoryTotalMiB     int64     `json:"memoryTotalMiB"`
	MemoryAvailableMiB int64     `json:"memoryAvailableMiB"`
	MemoryCommittedMiB int64     `json:"memoryCommittedMiB"`
	SandboxesRunning   int       `json:"sandboxesRunning"`
	SandboxesPaused    int       `json:"sandboxesPaused"`
	LastHeartbeat      time.Time `json:"lastHeartbeat"`
}

// DrainResult says what draining a host did.
type DrainResult struct {
	HostID string `json:"hostID"`
	// Paused are the sandboxes the drain paused; they resume on the same host.
	Paused []string `json:"paused"`
	// Failed are running sandboxes that could not be paused, and why; they keep running.
	Failed []struct {
		SandboxID string `json:"sandboxID"`
		Error     string `json:"error"`
	} `json:"failed"`
}

// ListHosts lists the host agents.
func (c *Client) ListHosts(ctx context.Context) ([]Host, error) {
	var hosts []Host
	_, _, err := c.call(ctx, "list hosts", http.MethodGet, "/hearth/v1/hosts", nil, nil, &hosts, http.StatusOK)
	return hosts, err
}

// DrainHost stops new sandboxes from being placed on a host and pauses its running ones.
func (c *Client) DrainHost(ctx context.Context, id string) (DrainResult, error) {
	var res DrainResult
	_, _, err := c.call(ctx, "drain host "+id, http.MethodPost, "/hearth/v1/hosts/"+url.PathEscape(id)+"/drain", nil, nil, &res, http.StatusOK)
	return res, err
}

// UndrainHost lets a drained host take new sandboxes again.
func (c *Client) UndrainHost(ctx context.Context, id string) error {
	_, _, err := c.call(ctx, "undrain host "+id, http.MethodPost, "/hearth/v1/hosts/"+url.PathEscape(id)+"/undrain", nil, nil, nil, http.StatusNoContent)
	return err
}
