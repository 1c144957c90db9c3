package gvisor

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

// envd serves on a host Unix socket too (see EnvdSocket), and gVisor refuses to checkpoint a
// sandbox that listens on one: checkpoint runs between envd's POST /freeze, which closes the
// socket, and POST /thaw, which serves it again (after the restore, or at once when the
// checkpoint failed). Both go to envd's TCP address.

const envdCallTimeout = 5 * time.Second

// envdClient sends freeze and thaw; no keep-alives, so no connection outlives a checkpoint.
var envdClient = &http.Client{Timeout: envdCallTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// freezeEnvd closes envd's host socket and makes sure nothing else in the sandbox is bound in
// the shared directory (root in the sandbox could bind there; such a socket lives as long as
// its file): a checkpoint that meets one kills the sandbox instead of failing.
func (d *Driver) freezeEnvd(ctx context.Context, s runtime.Spec) error {
	ferr := callEnvd(ctx, s, "/freeze")
	dir := filepath.Join(s.Dir, hostSocketDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("envd host socket dir: %w", err)
	}
	for _, e := range ents {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, e.Name())
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			continue // a socket file nobody listens on any more
		}
		c.Close()
		if e.Name() == envdSocket && ferr != nil {
			return fmt.Errorf("%w (envd's host socket is still open, and gVisor cannot checkpoint it)", ferr)
		}
		return fmt.Errorf("a socket is bound at %s/%s in the sandbox, which gVisor cannot checkpoint: remove that file and pause again", guestSocketDir, e.Name())
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
