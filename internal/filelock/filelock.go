// Package filelock serialises work on cached artefacts (template root filesystems, VM
// images, kernels) between goroutines, agents and CLI runs on one machine, with flock(2).
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often a waiting Lock retries; flock has no timed wait, and polling lets
// ctx cancel the wait.
const pollInterval = 50 * time.Millisecond

// Lock takes an exclusive lock on path (created if missing) and returns its release.
func Lock(ctx context.Context, path string) (unlock func(), err error) {
	h, err := Acquire(ctx, path)
	if err != nil {
		return nil, err
	}
	return h.Unlock, nil
}

// Held is a lock taken by Acquire.
type Held struct {
	f    *os.File
	path string
}

// Acquire takes an exclusive lock on path (created if missing). The lock is on the file
// that path names once it is held: a waiter whose file was removed (UnlockAndRemove) while
// it waited opens path again, so a removed lock file never has a holder that a newcomer
// cannot see.
func Acquire(ctx context.Context, path string) (*Held, error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := waitFlock(ctx, f); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		now, err := os.Stat(path)
		if err == nil && os.SameFile(held, now) {
			return &Held{f: f, path: path}, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// Removed (and maybe made again) while this waited: lock the file path names now.
	}
}

func waitFlock(ctx context.Context, f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// Unlock releases the lock (closing the file releases it).
func (h *Held) Unlock() { h.f.Close() }

// UnlockAndRemove removes the lock file, then releases the lock: for a lock whose subject is
// gone for good (a deleted template version), so that no empty lock file stays behind.
// Removing it while it is held is what makes it safe: a waiter sees, once it gets the lock,
// that path no longer names its file and starts over.
func (h *Held) UnlockAndRemove() error {
	defer h.f.Close()
	if err := os.Remove(h.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove lock %s: %w", h.path, err)
	}
	return nil
}
