package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// APIError is an error response from the REST API or from envd's HTTP routes, which share
// E2B's body shape {"code": int, "message": string}.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's explanation, or the status text when the body had none.
	Message string
	// Op names what the client was doing, e.g. "pause sandbox abc".
	Op string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Op, e.Message, e.Status)
}

// IsNotFound reports whether err says the sandbox, file or process does not exist: HTTP 404
// from the API or envd, or Connect's not_found from envd's RPC services.
func IsNotFound(err error) bool {
	return hasStatus(err, http.StatusNotFound) || connect.CodeOf(err) == connect.CodeNotFound
}

// IsConflict reports whether err says the sandbox is in a state that does not allow the
// operation (pausing a paused sandbox, anything on one that is pausing or resuming): HTTP 409,
// or Connect's failed_precondition, which envd and the proxy use for the same thing.
func IsConflict(err error) bool {
	return hasStatus(err, http.StatusConflict) || connect.CodeOf(err) == connect.CodeFailedPrecondition
}

// IsUnauthorized reports whether the API key or envd access token was missing or wrong.
func IsUnauthorized(err error) bool {
	return hasStatus(err, http.StatusUnauthorized) || hasStatus(err, http.StatusForbidden) ||
		connect.CodeOf(err) == connect.CodeUnauthenticated
}

func hasStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// maxErrorBody bounds how much of an error response is read; messages are short.
const maxErrorBody = 64 << 10

// errorFromResponse turns a non-2xx response into an *APIError, reading the E2B error body
// when there is one and falling back to the body text or the status line.
func errorFromResponse(op string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode, Op: op}
	var parsed struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &parsed) == nil && parsed.Message != "" {
		e.Message = parsed.Message
	} else if text := strings.TrimSpace(string(body)); text != "" {
		e.Message = text
	} else {
		e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
	}
	return e
}
