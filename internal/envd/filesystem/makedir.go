package filesystem

import (
	"context"
	"errors"
	"fmt"
	"os"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// dirMode is the mode of directories envd creates, before the umask, as mkdir -p would.
const dirMode = 0o755

// MakeDir creates a directory and any missing parents, owned by the request's user. An
// existing directory is AlreadyExists, which the SDK's files.makeDir reports as false; an
// existing non-directory is InvalidArgument, as in E2B.
func (s *Service) MakeDir(_ context.Context, req *connect.Request[rpc.MakeDirRequest]) (*connect.Response[rpc.MakeDirResponse], error) {
	u, err := s.caller(req)
	if err != nil {
		return nil, err
	}
	path, err := s.resolve(req.Msg.GetPath(), "path", u)
	if err != nil {
		return nil, err
	}
	var entry *rpc.EntryInfo
	err = asUser(u, func() error {
		if fi, err := os.Stat(path); err == nil {
			if fi.IsDir() {
				return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory %s already exists", path))
			}
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("%s already exists and is not a directory; remove it or choose another path", path))
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := identity.MkdirAll(u, path, dirMode); err != nil {
			return err
		}
		var err error
		entry, err = entryInfo(path, newNames())
		return err
	})
	if err != nil {
		return nil, fsError("make directory", path, err)
	}
	return connect.NewResponse(&rpc.MakeDirResponse{Entry: entry}), nil
}
