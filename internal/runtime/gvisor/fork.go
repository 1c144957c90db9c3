package gvisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

var _ runtime.ForkDriver = (*Driver)(nil)

// Fork implements runtime.ForkDriver: `runsc checkpoint --leave-running` of the parent into a
// temporary image in its dir, then one `runsc restore` per child, as a template snapshot is
// restored (each child gets its own overlay and memory; runsc takes the addresses of the
// child's netns). The image is removed once every child has been restored.
func (d *Driver) Fork(ctx context.Context, parent runtime.Spec, children []runtime.Spec) ([]error, error) {
	start := time.Now()
	img := filepath.Join(parent.Dir, fmt.Sprintf("fork-%d", time.Now().UnixNano()))
	defer os.RemoveAll(img)
	if parent.MemoryMiB > 0 {
		if err := d.writeMemoryLimit(parent, transientMemoryMiB(parent)); err != nil {
			return nil, fmt.Errorf("fork %s: raise memory limit for the checkpoint: %w", parent.ID, err)
		}
	}
	err := d.freezeEnvd(ctx, parent)
	if err == nil {
		err = d.checkpoint(ctx, parent, img, true)
	}
	d.restoreMemoryLimit(parent)
	if err == nil {
		err = d.waitEnvd(ctx, parent)
	}
	d.thawEnvd(context.WithoutCancel(ctx), parent)
	if err != nil {
		return nil, fmt.Errorf("fork %s: %w", parent.ID, err)
	}
	errs := make([]error, len(children))
	for i, c := range children {
		errs[i] = d.restoreChild(ctx, c, img, parent.EnvdSecret)
	}
	d.log.Info("forked", "id", parent.ID, "children", len(children), "took", time.Since(start).Round(time.Millisecond))
	return errs, nil
}

// restoreChild restores child s from the parent's image img. Its envd is the parent's copy
// and takes the parent's secret (parentSecret) until the agent's /init gives it its own.
func (d *Driver) restoreChild(ctx context.Context, s runtime.Spec, img, parentSecret string) (err error) {
	// Restoring loads every page while the image holds them too (see Resume).
	rs := s
	if s.MemoryMiB > 0 {
		rs.MemoryMiB = transientMemoryMiB(s)
	}
	bundle, err := d.prepareDir(rs)
	if err != nil {
		return fmt.Errorf("fork into %s: %w", s.ID, err)
	}
	copied := s
	copied.EnvdSecret = parentSecret
	if err := d.restore(ctx, copied, bundle, img); err != nil {
		d.cleanupFailed(s)
		return fmt.Errorf("fork into %s: %w", s.ID, err)
	}
	d.restoreMemoryLimit(s)
	return nil
}
