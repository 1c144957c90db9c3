package filesystem

import (
	"context"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// Move renames source to destination, creating the destination's missing parent directories
// owned by the user, and describes the entry at its new path. As with rename(2), an existing
// destination file is replaced and a non-empty destination directory is AlreadyExists.
func (s *Service) Move(_ context.Context, req *connect.Request[rpc.MoveRequest]) (*connect.Response[rpc.MoveResponse], error) {
	u, err := s.caller(req)
	if err != nil {
		return nil, err
	}
	src, err := s.resolve(req.Msg.GetSource(), "source", u)
	if err != nil {
		return nil, err
	}
	dst, err := s.resolve(req.Msg.GetDestination(), "destination", u)
	if err != nil {
		return nil, err
	}
	var entry *rpc.EntryInfo
	op, at := "move", src
	err = asUser(u, func() error {
		if _, err := os.Lstat(src); err != nil {
			return err
		}
		if err := identity.MkdirAll(u, filepath.Dir(dst), dirMode); err != nil {
			op, at = "create parent directories of", dst
			return err
		}
		if err := os.Rename(src, dst); err != nil {
			op, at = "move "+src+" to", dst
			return err
		}
		var err error
		entry, err = entryInfo(dst, newNames())
		return err
	})
	if err != nil {
		return nil, fsError(op, at, err)
	}
	return connect.NewResponse(&rpc.MoveResponse{Entry: entry}), nil
}
