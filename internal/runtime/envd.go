package runtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// ErrExited is returned by WaitEnvd when the sandbox's process (a VMM) ends before envd
// answers.
var ErrExited = errors.New("sandbox process exited")

// healthClient has no keep-alives: each probe must see envd answer anew, and a pooled
// connection to a sandbox that is gone would only delay the next probe.
var healthClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// WaitEnvd polls envd's GET /health at addr until it answers 204 (or 200), ctx ends, or
// exited (closed when the sandbox's process ends; may be nil) is closed. Every driver
// returns from Create and Resume through it.
func WaitEnvd(ctx context.Context, addr netip.AddrPort, exited <-chan struct{}) error {
	url := fmt.Sprintf("http://%s/health", addr)
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := healthClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd at %s not healthy: %w (last: %v)", addr, ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("envd at %s: %w before envd answered", addr, ErrExited)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
