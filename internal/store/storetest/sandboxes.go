package storetest

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

// sandbox returns a running sandbox with every field set, so that a column the driver
// forgets shows up as a difference.
func sandbox(id string, started time.Time) store.Sandbox {
	return store.Sandbox{
		ID: id, TeamID: store.DefaultTeam, TemplateID: "tpl", Alias: "base", HostID: "host-1", State: store.StateRunning,
		CPUs: 2, MemoryMiB: 512, DiskMiB: 2048,
		StartedAt: started, EndAt: started.Add(5 * time.Minute),
		Metadata:           map[string]string{"user": "u1"},
		EnvVars:            map[string]string{"PATH": "/usr/bin", "EMPTY": ""},
		EnvdVersion:        "0.2.0",
		EnvdAccessToken:    "envd-" + id,
		TrafficAccessToken: "traffic-" + id,
		Secure:             true, AllowInternet: true, AutoPause: true, AutoResume: true,
		AllowOut:           []string{"1.1.1.1/32", "8.8.8.0/24"},
		DenyOut:            []string{"0.0.0.0/0"},
		AllowPublicTraffic: true, AutoPauseFilesystemOnly: true, PausedFilesystemOnly: true,
		SnapshotManifest: "sha256:" + strings.Repeat("ab", 32),
	}
}

func getSandbox(t *testing.T, s store.Store, id string) store.Sandbox {
	t.Helper()
	got, err := s.Sandbox(ctxFor(t), id)
	must(t, "sandbox "+id, err)
	return got
}

// sameSandbox compares everything but the fields the store owns.
func sameSandbox(t *testing.T, what string, got, want store.Sandbox) {
	t.Helper()
	got.Version, got.UpdatedAt = want.Version, want.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testSandboxCRUD(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	sb := sandbox("sb1", base)
	before := time.Now().Add(-time.Millisecond)
	must(t, "create", s.CreateSandbox(ctx, sb))
	got := getSandbox(t, s, "sb1")
	sameSandbox(t, "get", got, sb)
	if got.Version != 1 || got.UpdatedAt.Before(before) || got.UpdatedAt.After(time.Now()) {
		t.Fatalf("new sandbox: Version %d, UpdatedAt %v; want 1 and about now", got.Version, got.UpdatedAt)
	}

	wantErr(t, "duplicate", s.CreateSandbox(ctx, sandbox("sb1", base)), store.ErrConflict)
	_, err := s.Sandbox(ctx, "missing")
	wantErr(t, "missing", err, store.ErrNotFound)

	// Empty and nil maps read back as empty maps, never nil ones.
	wantErr(t, "no team", s.CreateSandbox(ctx, store.Sandbox{ID: "teamless", State: store.StateRunning}), store.ErrNoTeam)
	bare := store.Sandbox{ID: "bare", TeamID: store.DefaultTeam, State: store.StatePaused}
	must(t, "create bare", s.CreateSandbox(ctx, bare))
	if got := getSandbox(t, s, "bare"); got.Metadata == nil || len(got.Metadata) != 0 || got.EnvVars == nil ||
		!got.StartedAt.IsZero() || !got.EndAt.IsZero() {
		t.Fatalf("bare sandbox read back as %+v", got)
	}

	must(t, "delete", s.DeleteSandbox(ctx, "sb1"))
	wantErr(t, "delete again", s.DeleteSandbox(ctx, "sb1"), store.ErrNotFound)
	_, err = s.Sandbox(ctx, "sb1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	_, err = s.UpdateSandbox(ctx, "sb1", func(*store.Sandbox) error {
		t.Error("fn called for a deleted sandbox")
		return nil
	})
	wantErr(t, "update deleted", err, store.ErrNotFound)
}

func testUpdateSandbox(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "create", s.CreateSandbox(ctx, sandbox("sb1", base)))

	updated, err := s.UpdateSandbox(ctx, "sb1", func(sb *store.Sandbox) error {
		sb.State = store.StatePaused
		sb.HostID = "host-2"
		sb.EndAt = base.Add(time.Hour)
		sb.Metadata["added"] = "yes"
		sb.AutoResume = false
		sb.AllowOut, sb.DenyOut, sb.AllowPublicTraffic = nil, []string{"10.9.0.0/16"}, false
		sb.SnapshotManifest = "sha256:" + strings.Repeat("cd", 32)
		// The store owns these: the writes below must not stick.
		sb.ID, sb.Version = "other", 100
		return nil
	})
	must(t, "update", err)
	if updated.ID != "sb1" || updated.Version != 2 || updated.State != store.StatePaused ||
		updated.HostID != "host-2" || updated.Metadata["added"] != "yes" || updated.AutoResume ||
		updated.AllowOut != nil || !reflect.DeepEqual(updated.DenyOut, []string{"10.9.0.0/16"}) || updated.AllowPublicTraffic ||
		updated.SnapshotManifest != "sha256:"+strings.Repeat("cd", 32) {
		t.Fatalf("update returned %+v", updated)
	}
	if got := getSandbox(t, s, "sb1"); !reflect.DeepEqual(got, updated) {
		t.Fatalf("read after update:\n got %+v\nwant %+v", got, updated)
	}
	if _, err := s.Sandbox(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("fn renamed the sandbox: %v", err)
	}

	// A failing fn writes nothing and its error comes back.
	boom := errors.New("boom")
	_, err = s.UpdateSandbox(ctx, "sb1", func(sb *store.Sandbox) error {
		sb.State = store.StateStopping
		sb.Metadata["added"] = "no"
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update with failing fn: %v, want boom", err)
	}
	if got := getSandbox(t, s, "sb1"); !reflect.DeepEqual(got, updated) {
		t.Fatalf("failing fn changed the row:\n got %+v\nwant %+v", got, updated)
	}

	// Versions keep increasing.
	for want := int64(3); want <= 5; want++ {
		got, err := s.UpdateSandbox(ctx, "sb1", func(*store.Sandbox) error { return nil })
		must(t, "no-op update", err)
		if got.Version != want {
			t.Fatalf("version %d, want %d", got.Version, want)
		}
	}
}

// testUpdateSandboxAtomic has concurrent read-modify-write cycles: a lost update shows as a
// count short of the number of writers.
func testUpdateSandboxAtomic(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "create", s.CreateSandbox(ctx, sandbox("sb1", base)))
	const writers = 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateSandbox(ctx, "sb1", func(sb *store.Sandbox) error {
				n, _ := strconv.Atoi(sb.Metadata["n"]) // "" at first: 0
				time.Sleep(time.Millisecond)           // widen the race window
				sb.Metadata["n"] = strconv.Itoa(n + 1)
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, "concurrent update", err)
	}
	got := getSandbox(t, s, "sb1")
	if got.Metadata["n"] != strconv.Itoa(writers) || got.Version != writers+1 {
		t.Fatalf("after %d updates: n=%s version=%d, want n=%d version=%d",
			writers, got.Metadata["n"], got.Version, writers, writers+1)
	}
}

func testExpiredSandboxes(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	now := base.Add(time.Hour)
	mk := func(id, state string, end time.Time) {
		sb := sandbox(id, base)
		sb.State, sb.EndAt = state, end
		must(t, "create "+id, s.CreateSandbox(ctx, sb))
	}
	mk("late", store.StateRunning, now.Add(-time.Millisecond))
	mk("early", store.StateRunning, now.Add(-time.Minute))
	mk("at-now", store.StateRunning, now) // not before now
	mk("future", store.StateRunning, now.Add(time.Minute))
	mk("paused", store.StatePaused, now.Add(-time.Minute))
	mk("starting", store.StateStarting, now.Add(-time.Minute))

	got, err := s.ExpiredSandboxes(ctx, now)
	must(t, "expired", err)
	var ids []string
	for _, sb := range got {
		ids = append(ids, sb.ID)
	}
	if want := []string{"early", "late"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("expired %v, want %v", ids, want)
	}
	sameSandbox(t, "expired record", got[0], func() store.Sandbox {
		sb := sandbox("early", base)
		sb.EndAt = now.Add(-time.Minute)
		return sb
	}())
	got, err = s.ExpiredSandboxes(ctx, base)
	must(t, "expired at base", err)
	if len(got) != 0 {
		t.Fatalf("expired before any deadline: %d sandboxes", len(got))
	}
}

// testSandboxTeam checks that listing filters by team and that an update cannot move a
// sandbox to another team.
func testSandboxTeam(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	mine, theirs := sandbox("mine", base), sandbox("theirs", base.Add(time.Second))
	theirs.TeamID = "t2"
	must(t, "create mine", s.CreateSandbox(ctx, mine))
	must(t, "create theirs", s.CreateSandbox(ctx, theirs))
	for _, tc := range []struct {
		team string
		want []string
	}{{"", []string{"theirs", "mine"}}, {store.DefaultTeam, []string{"mine"}}, {"t2", []string{"theirs"}}, {"t3", nil}} {
		page, _, err := s.ListSandboxes(ctx, store.SandboxFilter{TeamID: tc.team})
		must(t, "list "+tc.team, err)
		var ids []string
		for _, sb := range page {
			ids = append(ids, sb.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Fatalf("team %q lists %v, want %v", tc.team, ids, tc.want)
		}
	}
	got, err := s.UpdateSandbox(ctx, "mine", func(x *store.Sandbox) error { x.TeamID = "t2"; x.State = store.StatePaused; return nil })
	must(t, "update", err)
	if got.TeamID != store.DefaultTeam || getSandbox(t, s, "mine").TeamID != store.DefaultTeam {
		t.Fatalf("update moved the sandbox to team %q", got.TeamID)
	}
}
