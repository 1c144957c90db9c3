package files

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"syscall"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// statusFor maps a filesystem error to the status E2B's envd and the SDKs use, with a message
// that names the operation, the path and what to do about it.
func statusFor(op, path string, err error) *httpError {
	status, hint := http.StatusInternalServerError, ""
	switch {
	case errors.Is(err, identity.ErrCannotActAs):
		return &httpError{http.StatusForbidden, fmt.Errorf("%s %s: %w", op, path, err)}
	case errors.Is(err, fs.ErrNotExist):
		status, hint = http.StatusNotFound, "check the path exists"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		status, hint = http.StatusForbidden, "act as a user with access, e.g. username=root"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		status, hint = http.StatusInsufficientStorage, "not enough disk space available; free space and retry"
	case errors.Is(err, syscall.EISDIR):
		status, hint = http.StatusBadRequest, "the path is a directory"
	case errors.Is(err, syscall.ENOTDIR):
		status, hint = http.StatusBadRequest, "a component of the path is not a directory"
	case errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EINVAL):
		status = http.StatusBadRequest
	case errors.Is(err, syscall.EROFS):
		status, hint = http.StatusForbidden, "the filesystem is read-only"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	msg := fmt.Sprintf("%s %s: %v", op, path, err)
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return &httpError{status, errors.New(msg)}
}
