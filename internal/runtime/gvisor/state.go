package gvisor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hearthsh/hearth/internal/runtime"
)

// Container statuses as runsc reports them.
const (
	statusCreated = "created"
	statusRunning = "running"
	statusPaused  = "paused"
	statusStopped = "stopped"
)

// containerState is the part of `runsc state` the driver uses.
type containerState struct {
	ID     string `json:"id"`
	PID    int    `json:"pid"`
	Status string `json:"status"`
}

// state returns the container's state; the error satisfies isNotExist when there is none.
func (r *runsc) state(ctx context.Context, id string) (containerState, error) {
	out, err := r.output(ctx, runtime.Spec{}, "state", id)
	if err != nil {
		return containerState{}, err
	}
	var st containerState
	if err := json.Unmarshal(out, &st); err != nil {
		return containerState{}, fmt.Errorf("runsc state %s: %w", id, err)
	}
	return st, nil
}

// list returns the IDs of all containers under this runsc root.
func (r *runsc) list(ctx context.Context) ([]string, error) {
	out, err := r.output(ctx, runtime.Spec{}, "list", "--format=json")
	if err != nil {
		return nil, err
	}
	var cs []containerState
	if len(out) > 0 && string(out) != "null\n" {
		if err := json.Unmarshal(out, &cs); err != nil {
			return nil, fmt.Errorf("runsc list: %w", err)
		}
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// waitStopped polls until the container is stopped or gone. runsc takes 1–2 s from kill to
// stopped, and right after checkpoint returns `state` may still say running; deleting before
// then fails or leaks.
func (r *runsc) waitStopped(ctx context.Context, id string) error {
	for {
		st, err := r.state(ctx, id)
		if isNotExist(err) || (err == nil && st.Status == statusStopped) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for %s to stop (last status %q): %w", id, st.Status, ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopAndDelete removes the container in whatever state it is; one that does not exist is
// not an error. `delete --force` kills and deletes in one call and takes ~15 ms, also right
// after a checkpoint while `state` still says running. Only if it fails does this fall back
// to the slow path: kill, poll until stopped (runsc needs 1–2 s for that), then delete.
func (r *runsc) stopAndDelete(ctx context.Context, id string) error {
	st, err := r.state(ctx, id)
	if isNotExist(err) {
		return nil
	}
	if err == nil && st.Status == statusPaused {
		_, _ = r.output(ctx, runtime.Spec{}, "resume", id)
	}
	if _, err := r.output(ctx, runtime.Spec{}, "delete", "--force", id); err == nil || isNotExist(err) {
		return nil
	}
	// An error here (the container stopped on its own in between) is not fatal: a
	// container that really keeps running fails waitStopped's deadline instead.
	_, _ = r.output(ctx, runtime.Spec{}, "kill", id, "KILL")
	if err := r.waitStopped(ctx, id); err != nil {
		return err
	}
	if _, err := r.output(ctx, runtime.Spec{}, "delete", "--force", id); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}
