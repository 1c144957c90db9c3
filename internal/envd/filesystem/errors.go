package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// fsError turns an error from a filesystem call into a Connect error whose code the SDKs map to
// the right exception (NotFound → FileNotFoundError, InvalidArgument → InvalidArgumentError, …)
// and whose message says what went wrong and where. Errors that already carry a Connect code
// pass through unchanged.
func fsError(op, path string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code, hint := classify(err)
	msg := fmt.Sprintf("%s %s: %v", op, path, unwrapPathError(err))
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return connect.NewError(code, errors.New(msg))
}

// classify picks the Connect code for an errno and a hint telling the caller what to change.
func classify(err error) (connect.Code, string) {
	switch {
	case errors.Is(err, identity.ErrCannotActAs):
		return connect.CodePermissionDenied, ""
	case errors.Is(err, fs.ErrNotExist):
		return connect.CodeNotFound, "check the path exists"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return connect.CodePermissionDenied, "run as a user with access, e.g. root"
	case errors.Is(err, syscall.ENOTDIR):
		return connect.CodeInvalidArgument, "a component of the path is not a directory"
	case errors.Is(err, syscall.EISDIR):
		return connect.CodeInvalidArgument, "the path is a directory"
	case errors.Is(err, fs.ErrExist), errors.Is(err, syscall.ENOTEMPTY):
		return connect.CodeAlreadyExists, "remove the existing entry first"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return connect.CodeResourceExhausted, "the sandbox's disk is full; free space and retry"
	case errors.Is(err, syscall.ELOOP):
		return connect.CodeInvalidArgument, "too many levels of symbolic links"
	case errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.EINVAL):
		return connect.CodeInvalidArgument, ""
	case errors.Is(err, syscall.EXDEV):
		return connect.CodeFailedPrecondition, "source and destination are on different filesystems"
	case errors.Is(err, syscall.EROFS):
		return connect.CodeFailedPrecondition, "the filesystem is read-only"
	default:
		return connect.CodeInternal, ""
	}
}

// unwrapPathError drops the *fs.PathError wrapper, whose text repeats the path the message
// already names.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
