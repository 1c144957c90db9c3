package hearth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// apiHeaderKey is the REST API's authentication header, as in E2B.
const apiHeaderKey = "X-API-Key"

// call sends one REST request with a JSON body (when in is not nil), checks the status is one
// of want, and decodes the response body into out (when out is not nil). It returns the
// response's status and headers for callers that distinguish 200 from 201 or read paging
// headers.
func (c *Client) call(ctx context.Context, op, method, path string, query url.Values, in, out any, want ...int) (int, http.Header, error) {
	u := c.apiBase() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.APIKey != "" {
		req.Header.Set(apiHeaderKey, c.APIKey)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if !statusIn(resp.StatusCode, want) {
		return resp.StatusCode, resp.Header, errorFromResponse(op, resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("%s: decode response: %w", op, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

func statusIn(status int, want []int) bool {
	for _, w := range want {
		if status == w {
			return true
		}
	}
	return false
}
