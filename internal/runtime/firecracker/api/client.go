// Package api is a typed client for the Firecracker API, HTTP over the Unix socket each
// Firecracker process serves (--api-sock), limited to the calls Hearth makes. It is written
// by hand against Firecracker's swagger rather than generated, because Hearth uses a dozen
// calls and needs fields (mem_backend, free page reporting) that the generated Go SDK lacks.
//
// Every call takes a ctx and returns an *Error carrying Firecracker's fault_message when
// Firecracker answers with a non-2xx status.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client talks to one Firecracker process.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the API socket at path. No connection is made until a call.
func New(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		// One VMM, one socket, strictly sequential calls: a single idle connection is all
		// that is ever reused.
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// SocketPath is the API socket this client talks to.
func (c *Client) SocketPath() string { return c.socket }

// Close drops idle connections, so a Firecracker process that is killed afterwards leaves no
// half-open socket in this process.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is a non-2xx answer from Firecracker.
type Error struct {
	Method, Path string
	StatusCode   int
	// FaultMessage is Firecracker's explanation, from the body {"fault_message": "..."}; if
	// the body had no such field it holds the raw body.
	FaultMessage string
}

func (e *Error) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode,
		http.StatusText(e.StatusCode), e.FaultMessage)
}

// IsFault reports whether err is an answer from Firecracker (as opposed to a transport
// error such as a refused connection).
func IsFault(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// do sends one request; in, if not nil, is the JSON body, and out, if not nil, receives the
// JSON answer.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored on a Unix socket; "localhost" is what Firecracker documents.
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Method: method, Path: path, StatusCode: resp.StatusCode}
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(raw, &fault) == nil && fault.FaultMessage != "" {
			e.FaultMessage = fault.FaultMessage
		} else {
			e.FaultMessage = string(bytes.TrimSpace(raw))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("firecracker %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
