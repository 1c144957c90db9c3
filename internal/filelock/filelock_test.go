package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockExcludesAndHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder waits, and gives up when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want deadline exceeded", err)
	}
	// Once released, the next holder gets it.
	got := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), path)
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting Lock did not get the lock after release")
	}
}

// TestUnlockAndRemove: the lock file goes with its last holder, and a waiter that opened it
// before it went still excludes everyone who comes after (it locks the file path names, not
// the removed one).
func TestUnlockAndRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	first, err := Acquire(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		h   *Held
		err error
	}
	waiter := make(chan result, 1)
	go func() {
		h, err := Acquire(context.Background(), path)
		waiter <- result{h, err}
	}()
	time.Sleep(150 * time.Millisecond) // the waiter has opened the file and polls flock
	if err := first.UnlockAndRemove(); err != nil {
		t.Fatal(err)
	}
	var second *Held
	select {
	case r := <-waiter:
		if r.err != nil {
			t.Fatal(r.err)
		}
		second = r.h
	case <-time.After(5 * time.Second):
		t.Fatal("waiter did not get the lock after UnlockAndRemove")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while the waiter holds the lock: %v, want deadline exceeded (two holders)", err)
	}
	if err := second.UnlockAndRemove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after UnlockAndRemove: %v, want it gone", err)
	}
}
