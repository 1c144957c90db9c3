package gvisor

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/confine"
	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/runtime"
)

// envd serves on a host Unix socket too (see EnvdSocket), and gVisor refuses to checkpoint a
// sandbox that listens on one: checkpoint runs between envd's POST /freeze, which closes the
// socket, and POST /thaw, which serves it again (after the restore, or at once when the
// checkpoint failed). Both go to envd's TCP address with the sandbox's agent secret
// (Spec.EnvdSecret), which envd requires once the agent's first /init has set it.

const envdCallTimeout = 5 * time.Second

// maxSocketDirEntries bounds the listing of the socket dir before a checkpoint: the sandbox
// decides how many entries it has.
const maxSocketDirEntries = 1024

// envdClient sends freeze and thaw; no keep-alives, so no connection outlives a checkpoint.
var envdClient = &http.Client{Timeout: envdCallTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// freezeEnvd closes envd's host socket and makes sure nothing else in the sandbox is bound in
// the shared directory (root in the sandbox could bind there; such a socket lives as long as
// its file): a checkpoint that meets one kills the sandbox instead of failing.
func (d *Driver) freezeEnvd(ctx context.Context, s runtime.Spec) error {
	ferr := callEnvd(ctx, s, "/freeze")
	// Root in the sandbox writes this directory: list it and dial its sockets without
	// following any entry, so a symlink there leads nowhere on the host.
	dir, err := confine.OpenDir(filepath.Join(s.Dir, hostSocketDir))
	if err != nil {
		return fmt.Errorf("envd host socket dir: %w", err)
	}
	defer dir.Close()
	ents, err := confine.ReadDir(dir, maxSocketDirEntries)
	if err != nil {
		return fmt.Errorf("envd host socket dir %s: %w: remove files from it in the sandbox and pause again", guestSocketDir, err)
	}
	dialer := &net.Dialer{Timeout: time.Second}
	for _, e := range ents {
		if e.Type&fs.ModeSocket == 0 {
			continue
		}
		c, err := confine.DialAt(ctx, dialer, dir, e.Name)
		if err != nil {
			continue // a socket file nobody listens on any more, or no socket by now
		}
		c.Close()
		if e.Name == envdSocket && ferr != nil {
			return fmt.Errorf("%w (envd's host socket is still open, and gVisor cannot checkpoint it)", ferr)
		}
		return fmt.Errorf("a socket is bound at %s/%s in the sandbox, which gVisor cannot checkpoint: remove that file and pause again", guestSocketDir, e.Name)
	}
	if ferr != nil {
		d.log.Warn("envd did not answer /freeze, but nothing listens on its host socket", "id", s.ID, "err", ferr)
	}
	return nil
}

// thawEnvd serves envd's host socket again. A failure only costs speed (the agent falls back
// to envd's TCP address), so it is logged, not returned.
func (d *Driver) thawEnvd(ctx context.Context, s runtime.Spec) {
	if err := callEnvd(ctx, s, "/thaw"); err != nil {
		d.log.Warn("envd host socket not reopened; envd traffic takes the sandbox network", "id", s.ID, "err", err)
	}
}

func callEnvd(ctx context.Context, s runtime.Spec, path string) error {
	ctx, cancel := context.WithTimeout(ctx, envdCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s%s", s.EnvdAddr(), path), nil)
	if err != nil {
		return err
	}
	if s.EnvdSecret != "" {
		req.Header.Set(auth.AgentHeader, s.EnvdSecret)
	}
	res, err := envdClient.Do(req)
	if err != nil {
		return fmt.Errorf("envd %s: %w", path, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("envd %s: %s: %s", path, res.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
