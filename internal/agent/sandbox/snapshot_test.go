package sandbox

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestSnapshotLock: starts from a snapshot share it, a delete waits for them and keeps new
// starts out until it is done, and a waiter gives up when its context ends.
func TestSnapshotLock(t *testing.T) {
	m := New(Config{DataDir: t.TempDir()})
	ctx := context.Background()
	startA, err := m.lockSnapshot(ctx, "s", false)
	if err != nil {
		t.Fatal(err)
	}
	startB, err := m.lockSnapshot(ctx, "s", false)
	if err != nil {
		t.Fatal("a second start waited for the first")
	}
	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := m.lockSnapshot(short, "s", true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delete during starts: %v, want it to wait until its deadline", err)
	}
	deleted := make(chan func())
	go func() {
		unlock, err := m.lockSnapshot(ctx, "s", true)
		if err != nil {
			t.Error(err)
		}
		deleted <- unlock
	}()
	startA()
	select {
	case <-deleted:
		t.Fatal("delete went ahead while a start held the snapshot")
	case <-time.After(200 * time.Millisecond):
	}
	startB()
	var unlockDelete func()
	select {
	case unlockDelete = <-deleted:
	case <-time.After(5 * time.Second):
		t.Fatal("delete still waiting after every start finished")
	}
	short2, cancel2 := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel2()
	if _, err := m.lockSnapshot(short2, "s", false); err == nil {
		t.Fatal("a start went ahead during a delete")
	}
	if _, err := m.lockSnapshot(ctx, "other", false); err != nil {
		t.Fatal("another snapshot is held by this one's delete")
	}
	unlockDelete()
	unlock, err := m.lockSnapshot(ctx, "s", false)
	if err != nil {
		t.Fatal("start after the delete finished:", err)
	}
	unlock()
}

// TestSnapshotsInDataDir: Snapshots lists complete snapshot dirs only, and Recover's clean-up
// removes what interrupted snapshots and deletes left.
func TestSnapshotsInDataDir(t *testing.T) {
	dir := t.TempDir()
	m := New(Config{DataDir: dir})
	if got, err := m.Snapshots(); err != nil || len(got) != 0 {
		t.Fatalf("no snapshots dir: %v, %v", got, err)
	}
	write := func(name, meta string) {
		t.Helper()
		p := m.snapshotDir(name)
		if err := mkdirAll(p); err != nil {
			t.Fatal(err)
		}
		if meta != "" {
			if err := writeFile(p+"/"+snapshotMetaFile, meta); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("good", `{"id":"good","template":"base","createdAt":"2026-01-01T00:00:00Z"}`)
	write("lies", `{"id":"other"}`)
	write("good.tmp", `{"id":"good"}`)
	write("gone.deleting", "")
	got, err := m.Snapshots()
	if err != nil || len(got) != 1 || got[0].ID != "good" || got[0].Template != "base" {
		t.Fatalf("snapshots = %+v, %v; want only good", got, err)
	}
	if _, err := m.loadSnapshot("nosuch"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("unknown snapshot: %v", err)
	}
	if _, err := m.loadSnapshot("../x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad ID: %v", err)
	}
	m.cleanSnapshots()
	for _, n := range []string{"good.tmp", "gone.deleting"} {
		if exists(m.snapshotDir(n)) {
			t.Errorf("%s left after clean-up", n)
		}
	}
	if !exists(m.snapshotDir("good")) {
		t.Error("clean-up removed a complete snapshot")
	}
}

func mkdirAll(p string) error { return os.MkdirAll(p, 0o700) }

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
