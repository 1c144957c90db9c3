package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// ListDir lists a directory's entries down to the requested depth (0 means 1, as the SDK
// sends depth 1 by default). Entries are reported under the requested path even when it is a
// symlink to a directory. Symlinked directories inside the tree are listed but not descended
// into, so a link cycle cannot make the walk loop. Subdirectories the user cannot read are
// listed without their contents.
func (s *Service) ListDir(ctx context.Context, req *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error) {
	u, err := s.caller(req)
	if err != nil {
		return nil, err
	}
	path, err := s.resolve(req.Msg.GetPath(), "path", u)
	if err != nil {
		return nil, err
	}
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	var entries []*rpc.EntryInfo
	err = asUser(u, func() error {
		root, err := filepath.EvalSymlinks(path)
		if err != nil {
			return err
		}
		fi, err := os.Stat(root)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("%s is not a directory; use stat for a single entry", path))
		}
		entries, err = walk(ctx, path, root, depth)
		return err
	})
	if err != nil {
		return nil, fsError("list directory", path, err)
	}
	return connect.NewResponse(&rpc.ListDirResponse{Entries: entries}), nil
}

// walk lists root (the resolved form of shown) to depth levels, naming entries under shown.
func walk(ctx context.Context, shown, root string, depth int) ([]*rpc.EntryInfo, error) {
	n := newNames()
	var entries []*rpc.EntryInfo
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			// An unreadable subdirectory was already listed by its parent; skip its contents.
			if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == root {
			return nil
		}
		if err := canceled(ctx); err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root+string(filepath.Separator))
		if root == "/" {
			rel = strings.TrimPrefix(p, "/")
		}
		level := strings.Count(rel, string(filepath.Separator)) + 1
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while listing
		}
		if err != nil {
			return err
		}
		entries = append(entries, entryFromInfo(filepath.Join(shown, rel), fi, n))
		if d.IsDir() && level >= depth {
			return filepath.SkipDir
		}
		return nil
	})
	return entries, err
}
