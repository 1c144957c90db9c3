// Package filesystem implements envd's filesystem.Filesystem Connect service: stat, list,
// make, move and remove entries, and watch directories, each on behalf of the request's user.
//
// The service is wire-compatible with E2B's envd so the E2B SDKs drive it unchanged; where E2B's
// behaviour is observable through the SDK (error codes, entry fields, event names) it is matched.
// Every filesystem call runs inside identity.Do, on a thread with the user's credentials, so the
// kernel enforces the user's permissions and new entries belong to that user; when envd cannot
// take on the user's credentials the call is PermissionDenied, never done as root.
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
)

// Service implements filesystemconnect.FilesystemHandler.
type Service struct {
	env    *sandboxenv.Env
	logger *slog.Logger

	mu       sync.Mutex
	watchers map[string]*polledWatcher // CreateWatcher registry, by watcher id
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// New returns the filesystem service. Mount it with filesystemconnect.NewFilesystemHandler.
func New(env *sandboxenv.Env, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{env: env, logger: logger, watchers: map[string]*polledWatcher{}}
}

// Close stops every watcher created with CreateWatcher; call it when envd shuts down.
func (s *Service) Close() {
	s.mu.Lock()
	ws := s.watchers
	s.watchers = map[string]*polledWatcher{}
	s.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}

// caller resolves the user a request acts as from its Basic auth header, falling back to the
// sandbox's default user.
func (s *Service) caller(req connect.AnyRequest) (identity.User, error) {
	name, err := identity.UsernameFromRequest(req.Header())
	if err != nil {
		return identity.User{}, connect.NewError(connect.CodeUnauthenticated, err)
	}
	u, err := s.env.UserFor(name)
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return identity.User{}, connect.NewError(connect.CodeUnauthenticated,
				fmt.Errorf("%w: name an existing sandbox user in the Basic auth header", err))
		}
		return identity.User{}, connect.NewError(connect.CodeInternal, err)
	}
	return u, nil
}

// resolve turns a request path into an absolute path for u: "~" expands to the home directory
// and relative paths are taken from the default workdir, else the home directory.
func (s *Service) resolve(p, field string, u identity.User) (string, error) {
	if !utf8.ValidString(p) {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s is not valid UTF-8", field))
	}
	abs, err := identity.ResolvePath(p, u, s.env.DefaultWorkdir())
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid %s: %w", field, err))
	}
	return abs, nil
}

// asUser runs fn with u's filesystem credentials.
func asUser(u identity.User, fn func() error) error { return identity.Do(u, fn) }

// canceled reports whether ctx ended, for loops that walk large trees.
func canceled(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return connect.NewError(connect.CodeCanceled, err)
	}
	return nil
}
