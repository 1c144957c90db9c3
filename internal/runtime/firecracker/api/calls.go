package api

import (
	"context"
	"net/url"
)

// PutMachineConfig sets vCPUs and memory. Pre-boot only.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, "PUT", "/machine-config", m, nil)
}

// PutBootSource sets the kernel and its command line. Pre-boot only.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, "PUT", "/boot-source", b, nil)
}

// PutDrive adds or replaces drive d.DriveID. Pre-boot only.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, "PUT", "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface adds network interface n.IfaceID. Pre-boot only.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, "PUT", "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutBalloon adds the balloon device. Pre-boot only.
func (c *Client) PutBalloon(ctx context.Context, b Balloon) error {
	return c.do(ctx, "PUT", "/balloon", b, nil)
}

// PatchBalloon sets the balloon's target size; the guest driver inflates or deflates to it
// at its own pace.
func (c *Client) PatchBalloon(ctx context.Context, amountMiB int) error {
	return c.do(ctx, "PATCH", "/balloon", BalloonUpdate{AmountMiB: amountMiB}, nil)
}

// GetBalloon returns the balloon's configuration.
func (c *Client) GetBalloon(ctx context.Context) (Balloon, error) {
	var b Balloon
	err := c.do(ctx, "GET", "/balloon", nil, &b)
	return b, err
}

// GetBalloonStats returns the balloon's latest statistics; it fails unless statistics were
// enabled when the balloon was added.
func (c *Client) GetBalloonStats(ctx context.Context) (BalloonStats, error) {
	var s BalloonStats
	err := c.do(ctx, "GET", "/balloon/statistics", nil, &s)
	return s, err
}

// PatchBalloonStats changes the statistics polling interval (seconds, non-zero).
func (c *Client) PatchBalloonStats(ctx context.Context, intervalS int) error {
	return c.do(ctx, "PATCH", "/balloon/statistics", BalloonStatsUpdate{StatsPollingIntervalS: intervalS}, nil)
}

// PauseVM freezes the vCPUs (PATCH /vm Paused). Idempotent.
func (c *Client) PauseVM(ctx context.Context) error {
	return c.do(ctx, "PATCH", "/vm", VM{State: StatePaused}, nil)
}

// ResumeVM lets the vCPUs run again (PATCH /vm Resumed). Idempotent.
func (c *Client) ResumeVM(ctx context.Context) error {
	return c.do(ctx, "PATCH", "/vm", VM{State: StateResumed}, nil)
}

// CreateSnapshot writes the paused VM's state and memory to the given paths.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.do(ctx, "PUT", "/snapshot/create", s, nil)
}

// LoadSnapshot restores a snapshot into this fresh Firecracker process. On failure
// Firecracker exits.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	return c.do(ctx, "PUT", "/snapshot/load", s, nil)
}

// StartInstance boots the configured VM (PUT /actions InstanceStart).
func (c *Client) StartInstance(ctx context.Context) error {
	return c.do(ctx, "PUT", "/actions", Action{ActionType: ActionInstanceStart}, nil)
}

// PutMetrics names the file or FIFO Firecracker flushes its JSON metrics to.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, "PUT", "/metrics", m, nil)
}

// PutMMDSConfig enables the metadata service on the given interfaces. Pre-boot only.
func (c *Client) PutMMDSConfig(ctx context.Context, m MMDSConfig) error {
	return c.do(ctx, "PUT", "/mmds/config", m, nil)
}

// PutMMDS replaces the metadata store's contents with data (any JSON object).
func (c *Client) PutMMDS(ctx context.Context, data any) error {
	return c.do(ctx, "PUT", "/mmds", data, nil)
}

// PutEntropy adds a virtio-rng device. Pre-boot only.
func (c *Client) PutEntropy(ctx context.Context, e Entropy) error {
	return c.do(ctx, "PUT", "/entropy", e, nil)
}
