package filesystem

import (
	"context"
	"errors"
	"os"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// Remove deletes a file, a symlink (not its target) or a directory tree. Removing a path that
// does not exist succeeds, as in E2B, whose SDK tests rely on it.
func (s *Service) Remove(_ context.Context, req *connect.Request[rpc.RemoveRequest]) (*connect.Response[rpc.RemoveResponse], error) {
	u, err := s.caller(req)
	if err != nil {
		return nil, err
	}
	path, err := s.resolve(req.Msg.GetPath(), "path", u)
	if err != nil {
		return nil, err
	}
	if path == "/" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("refusing to remove the root directory"))
	}
	if err := asUser(u, func() error { return os.RemoveAll(path) }); err != nil {
		return nil, fsError("remove", path, err)
	}
	return connect.NewResponse(&rpc.RemoveResponse{}), nil
}
