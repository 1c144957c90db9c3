package hearth

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// Host is one host agent as GET /hearth/v1/hosts shows it (Hearth-only; the operator's
// team only). Its State is "ready" or "down".
type Host = api.HostInfo

// DrainResult says what draining a host did: the sandboxes it paused (they resume on the
// same host) and the running ones that could not be paused, and why (they keep running).
type DrainResult = api.DrainResult

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
