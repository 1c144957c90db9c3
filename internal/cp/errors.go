package cp

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/store"
)

// httpError carries the status a handler should answer with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error from the store, an agent or the control plane to an HTTP status.
func statusOf(err error) int {
	var he *httpError
	var ce *connect.Error
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, errNoCapacity):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.As(err, &ce):
		switch ce.Code() {
		case connect.CodeNotFound:
			return http.StatusNotFound
		case connect.CodeFailedPrecondition, connect.CodeAlreadyExists:
			return http.StatusConflict
		case connect.CodeInvalidArgument:
			return http.StatusBadRequest
		case connect.CodeUnavailable, connect.CodeResourceExhausted: // a full host
			return http.StatusServiceUnavailable
		case connect.CodeDeadlineExceeded:
			return http.StatusGatewayTimeout
		}
	}
	return http.StatusInternalServerError
}

func fail(w http.ResponseWriter, err error) {
	writeError(w, statusOf(err), err.Error())
}

// busy is the 409 for an operation on a sandbox in a state that does not allow it.
// lostErr answers an operation on a sandbox whose host stopped responding.
func lostErr(sb store.Sandbox, op string) error {
	return errorf(http.StatusServiceUnavailable, "sandbox %s is lost: its host %s stopped responding, so it cannot %s it; it is back if the host comes back with it, or kill it to forget it", sb.ID, sb.HostID, op)
}

func busy(id, state, op string) error {
	return errorf(http.StatusConflict, "sandbox %s is %s: cannot %s it now", id, state, op)
}
