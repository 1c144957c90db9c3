package microvm

import (
	"context"
	"fmt"
	"time"
)

// Balloon is what the memory-reclaim step of a pause needs from a VMM's balloon device.
// Sizes are bytes of guest memory, not of balloon: Target 384 MiB on a 512 MiB guest
// inflates the balloon by 128 MiB.
type Balloon interface {
	// FreeMemory returns the guest's free memory as its balloon driver reports it, fresh:
	// taken after the call started, so after the caller's sync and drop_caches.
	FreeMemory(ctx context.Context) (int64, error)
	// Actual is the memory the guest has now, its RAM less the balloon.
	Actual(ctx context.Context) (int64, error)
	// SetTarget asks the guest to give memory back (or take it) until it has target bytes.
	SetTarget(ctx context.Context, target int64) error
}

// ReclaimOptions tunes ReclaimMemory; zero values take the defaults.
type ReclaimOptions struct {
	// Headroom is free memory left to the guest: it keeps running until the vCPUs are
	// stopped and must not hit memory pressure meanwhile. Default 24 MiB.
	Headroom int64
	// Settle ends the wait when the balloon has not grown for this long (the guest cannot
	// give more). Default 400 ms.
	Settle time.Duration
	// Timeout bounds the whole step. Default 10 s.
	Timeout time.Duration
}

// ReclaimResult records one reclaim: the balloon readings before and after, proving the
// inflation happened (or why it did not).
type ReclaimResult struct {
	Before  int64         `json:"before"`
	Free    int64         `json:"free"`
	Target  int64         `json:"target"`
	After   int64         `json:"after"`
	Took    time.Duration `json:"took"`
	Skipped string        `json:"skipped,omitempty"`
}

// minReclaim is the least free memory worth inflating for.
const minReclaim = 8 << 20

// ReclaimMemory inflates the balloon by what the guest does not use, less Headroom, and
// waits until the guest has handed the pages over, the balloon stops growing, or the
// timeout. Ballooned pages are discarded by the VMM (a hole punched in the memory file), so
// they cost nothing in the snapshot. The caller deflates with SetTarget(ram) when it resumes
// the guest or rolls the pause back.
func ReclaimMemory(ctx context.Context, b Balloon, o ReclaimOptions) (ReclaimResult, error) {
	if o.Headroom == 0 {
		o.Headroom = 24 << 20
	}
	if o.Settle == 0 {
		o.Settle = 400 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var r ReclaimResult
	var err error
	if r.Before, err = b.Actual(ctx); err != nil {
		return r, fmt.Errorf("balloon: %w", err)
	}
	if r.Free, err = b.FreeMemory(ctx); err != nil {
		return r, fmt.Errorf("balloon: guest memory statistics: %w", err)
	}
	give := r.Free - o.Headroom
	if give < minReclaim {
		r.After, r.Target, r.Skipped = r.Before, r.Before, fmt.Sprintf("only %d MiB free", r.Free>>20)
		return r, nil
	}
	r.Target = r.Before - give
	if err := b.SetTarget(ctx, r.Target); err != nil {
		return r, fmt.Errorf("balloon: inflate to %d MiB: %w", r.Target>>20, err)
	}
	last, lastChange := r.Before, time.Now()
	for ctx.Err() == nil {
		cur, err := b.Actual(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break // out of time: what was reclaimed so far still counts
			}
			return r, fmt.Errorf("balloon: %w", err)
		}
		r.After = cur
		if cur <= r.Target+(1<<20) {
			break
		}
		if cur < last {
			last, lastChange = cur, time.Now()
		} else if time.Since(lastChange) >= o.Settle {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(25 * time.Millisecond):
		}
	}
	r.Took = time.Since(start)
	return r, nil
}
