package gvisor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hearthsh/hearth/internal/procs"
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

// containerID is the runsc container ID of sandbox id. runsc resolves every ID it is given
// as a prefix (runsc/container.findContainerID: `state x` matches any container whose ID
// starts with x), so with sandboxes "x" and "x1" in one root every call for "x" fails as
// ambiguous, and a call for a gone "x" acts on "x1". The terminating dot, which no sandbox ID
// holds (they are lower-case letters, digits and dashes), makes no container ID a prefix of
// another: "x." is a prefix only of IDs starting with "x.", and none does.
func containerID(id string) string { return id + "." }

// stopTimeout bounds stopAndDelete's polite path (delete, or kill and wait for runsc to say
// stopped), whatever the caller's context: past it the sandbox's processes are SIGKILLed.
const stopTimeout = 30 * time.Second

// waitStopped polls until the container is stopped or gone. runsc takes 1–2 s from kill to
// stopped, and right after checkpoint returns `state` may still say running; deleting before
// then fails or leaks.
func (r *runsc) waitStopped(ctx context.Context, cid string) error {
	for {
		st, err := r.state(ctx, cid)
		if isNotExist(err) || (err == nil && st.Status == statusStopped) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for %s to stop (last status %q, last error %v): %w", cid, st.Status, err, ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopAndDelete removes container cid in whatever state it is; one that does not exist is
// not an error. `delete --force` kills and deletes in one call and takes ~15 ms, also right
// after a checkpoint while `state` still says running. Only if it fails does this fall back
// to the slow path: kill, poll until stopped (runsc needs 1–2 s for that), then delete. That
// path ends within stopTimeout; past it forceStop SIGKILLs what runs and deletes the record.
func (r *runsc) stopAndDelete(ctx context.Context, cid string) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	st, err := r.state(ctx, cid)
	if isNotExist(err) {
		return nil
	}
	if err == nil && st.Status == statusPaused {
		_, _ = r.output(ctx, runtime.Spec{}, "resume", cid)
	}
	if _, err := r.output(ctx, runtime.Spec{}, "delete", "--force", cid); err == nil || isNotExist(err) {
		return nil
	}
	// An error here (the container stopped on its own in between) is not fatal: a
	// container that really keeps running fails waitStopped's deadline instead.
	_, _ = r.output(ctx, runtime.Spec{}, "kill", cid, "KILL")
	err = r.waitStopped(ctx, cid)
	if err == nil {
		_, err = r.output(ctx, runtime.Spec{}, "delete", "--force", cid)
		if err == nil || isNotExist(err) {
			return nil
		}
	}
	if parent.Err() != nil { // the caller gave up: not this call's to force
		return fmt.Errorf("stop %s: %w", cid, err)
	}
	return r.forceStop(context.WithoutCancel(parent), cid, err)
}

// forceStop ends a container runsc would not stop: it SIGKILLs the runsc processes of this
// root that serve cid (the sandbox process and any runsc call for it still running), then
// deletes runsc's record. cause is why the polite path failed; it is logged and, if the
// container still exists afterwards, returned.
func (r *runsc) forceStop(ctx context.Context, cid string, cause error) error {
	pids := procs.Find(func(args []string) bool { return hasRoot(args, r.root) && slices.Contains(args, cid) })
	r.log.Warn("runsc did not stop the container in time; killing its processes", "container", cid, "pids", pids, "err", cause)
	procs.KillAndWait(pids, 5*time.Second)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := r.output(ctx, runtime.Spec{}, "delete", "--force", cid); err != nil && !isNotExist(err) {
		return fmt.Errorf("stop %s: %v; after killing its processes %v: %w", cid, cause, pids, err)
	}
	return nil
}
