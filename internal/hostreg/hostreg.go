// Package hostreg is how host agents register with the control plane: every few seconds an
// agent POSTs a heartbeat with its addresses, capacity and built templates to
// /hearth/v1/hosts/{id}/heartbeat. A host that stops sending them is marked down.
package hostreg

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Heartbeat is the body of a heartbeat.
type Heartbeat struct {
	RPCAddr            string     `json:"rpcAddr"`
	ProxyAddr          string     `json:"proxyAddr"`
	Runtime            string     `json:"runtime"`
	CPUs               int        `json:"cpus"`
	MemoryTotalMiB     int64      `json:"memoryTotalMiB"`
	MemoryAvailableMiB int64      `json:"memoryAvailableMiB"`
	MemoryCommittedMiB int64      `json:"memoryCommittedMiB"`
	SandboxesRunning   int        `json:"sandboxesRunning"`
	SandboxesPaused    int        `json:"sandboxesPaused"`
	Templates          []Template `json:"templates"`
}

// Template is a template built on the agent's host.
type Template struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	EnvdVersion string `json:"envdVersion"`
}

// Path is the heartbeat route for a host ID.
func Path(hostID string) string { return "/hearth/v1/hosts/" + url.PathEscape(hostID) + "/heartbeat" }

// Sender posts heartbeats to a control plane.
type Sender struct {
	ControlPlane string // base URL, e.g. http://127.0.0.1:3000
	Token        string // agent token; empty for a loopback control plane
	HostID       string
	Interval     time.Duration
	// Build returns the current heartbeat.
	Build func(ctx context.Context) (Heartbeat, error)
	Log   *slog.Logger
	HTTP  *http.Client
}

// Send posts one heartbeat.
func (s *Sender) Send(ctx context.Context) error {
	hb, err := s.Build(ctx)
	if err != nil {
		return fmt.Errorf("build heartbeat: %w", err)
	}
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ControlPlane+Path(s.HostID), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("heartbeat to %s: %w", s.ControlPlane, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("heartbeat to %s: %s: %s", s.ControlPlane, res.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Run sends heartbeats until ctx ends, logging failures (the control plane may restart).
func (s *Sender) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	failing := false
	for {
		sctx, cancel := context.WithTimeout(ctx, interval)
		err := s.Send(sctx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.Log.Warn("heartbeat failed; retrying", "err", err)
			failing = true
		case err == nil && failing:
			s.Log.Info("heartbeat delivered again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
