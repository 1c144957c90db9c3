package proxy

import (
	"errors"
	"net/http"
)

// NotFoundMessage and PortClosedMessage open the messages of E2B's proxy for the same cases.
const (
	NotFoundMessage   = "The sandbox was not found"
	PortClosedMessage = "The sandbox is running but port is not open"
)

// NotFoundError means the proxy cannot reach the sandbox because it is not running and will
// not run on this traffic: it does not exist, was killed, its timeout ran out, it is being
// killed, or it is paused without auto-resume. E2B's proxy answers all of these with 502 and
// {"message": "The sandbox was not found", "sandboxId": …, "code": 502}, and the SDKs read a
// 502 on envd's /health as "not running" (isRunning() false; a cut stream becomes a
// TimeoutError saying the sandbox was killed or reached its end of life).
type NotFoundError struct {
	SandboxID string
	// Detail says which of the cases it is and what to do, after E2B's message.
	Detail string
}

func (e *NotFoundError) Error() string {
	if e.Detail == "" {
		return NotFoundMessage
	}
	return NotFoundMessage + ": " + e.Detail
}

// IsNotFound reports whether err is, or wraps, a *NotFoundError.
func IsNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf)
}

// NotFoundStatus is the status of a NotFoundError, as E2B's proxy answers it.
const NotFoundStatus = http.StatusBadGateway
