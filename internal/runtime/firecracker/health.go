package firecracker

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// healthClient has no keep-alives: each probe must see envd answer anew.
var healthClient = &http.Client{
	Timeout:   500 * time.Millisecond,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// waitEnvd polls envd's GET /health until it answers 2xx, the VM process dies, or ctx ends.
func waitEnvd(ctx context.Context, addr netip.AddrPort, p *process) error {
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
		case <-p.done:
			return fmt.Errorf("firecracker exited while waiting for envd at %s: %v", addr, p.err)
		case <-ctx.Done():
			return fmt.Errorf("envd at %s not healthy: %w (last: %v)", addr, ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
