package gvisor

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// healthClient has no keep-alives: each probe must see envd answer anew, and a pooled
// connection to a sandbox that is gone would only delay the next probe.
var healthClient = &http.Client{
	Timeout:   500 * time.Millisecond,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// waitHealthy polls envd's GET /health until it answers 204 (or 200), or ctx ends.
func waitHealthy(ctx context.Context, addr netip.AddrPort) error {
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
		case <-time.After(10 * time.Millisecond):
		}
	}
}
