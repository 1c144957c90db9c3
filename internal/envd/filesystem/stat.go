package filesystem

import (
	"context"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// Stat describes one entry. A missing path is NotFound, which the SDK's files.exists turns
// into false.
func (s *Service) Stat(_ context.Context, req *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error) {
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
		var err error
		entry, err = entryInfo(path, newNames())
		return err
	})
	if err != nil {
		return nil, fsError("stat", path, err)
	}
	return connect.NewResponse(&rpc.StatResponse{Entry: entry}), nil
}
