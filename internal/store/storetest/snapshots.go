package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

// snapshot returns a snapshot with every field set, so that a column the driver forgets
// shows up as a difference.
func snapshot(id, name, team string, created time.Time) store.Snapshot {
	return store.Snapshot{
		ID: id, Name: name, TeamID: team, SourceSandboxID: "sb-" + id, HostID: "host-1",
		TemplateID: "tpl", Alias: "base", CPUs: 2, MemoryMiB: 512, DiskMiB: 2048,
		EnvdVersion: "0.6.4", SizeBytes: 123 << 20, CreatedAt: created,
	}
}

func testSnapshots(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	want := snapshot("s1", "", "", base)
	replaced, err := s.CreateSnapshot(ctx, want)
	must(t, "create", err)
	if replaced != nil {
		t.Fatalf("an unnamed snapshot replaced %+v", replaced)
	}
	got, err := s.Snapshot(ctx, "", "s1")
	must(t, "get", err)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back:\n got %+v\nwant %+v", got, want)
	}
	_, err = s.CreateSnapshot(ctx, snapshot("s1", "", "", base))
	wantErr(t, "duplicate ID", err, store.ErrConflict)
	// Unnamed snapshots do not share the empty name.
	_, err = s.CreateSnapshot(ctx, snapshot("s2", "", "", base.Add(time.Second)))
	must(t, "second unnamed", err)
	_, err = s.Snapshot(ctx, "", "")
	wantErr(t, "empty name", err, store.ErrNotFound)
	_, err = s.Snapshot(ctx, "other-team", "s1")
	wantErr(t, "another team's", err, store.ErrNotFound)

	// The source sandbox's record may go; the snapshot stays.
	must(t, "delete", s.DeleteSnapshot(ctx, "s1"))
	_, err = s.Snapshot(ctx, "", "s1")
	wantErr(t, "deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteSnapshot(ctx, "s1"), store.ErrNotFound)
}

func testSnapshotNames(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	first := snapshot("n1", "mine", "", base)
	_, err := s.CreateSnapshot(ctx, first)
	must(t, "create named", err)
	got, err := s.Snapshot(ctx, "", "mine")
	must(t, "by name", err)
	if got.ID != "n1" {
		t.Fatalf("by name: got %s, want n1", got.ID)
	}
	// An ID wins over an equal name.
	_, err = s.CreateSnapshot(ctx, snapshot("mine2", "n1", "", base))
	must(t, "name equal to another's ID", err)
	if got, _ := s.Snapshot(ctx, "", "n1"); got.ID != "n1" {
		t.Fatalf("lookup n1 found %s: an ID must win over a name", got.ID)
	}
	// A new snapshot of the same name takes it over and hands back the old record.
	replaced, err := s.CreateSnapshot(ctx, snapshot("n2", "mine", "", base.Add(time.Minute)))
	must(t, "rename", err)
	if replaced == nil || !reflect.DeepEqual(*replaced, first) {
		t.Fatalf("replaced = %+v, want %+v", replaced, first)
	}
	if got, _ := s.Snapshot(ctx, "", "mine"); got.ID != "n2" {
		t.Fatalf("name now belongs to %s, want n2", got.ID)
	}
	// n1's record is gone: the name n1 (mine2's) is all that matches now.
	if got, err := s.Snapshot(ctx, "", "n1"); err != nil || got.ID != "mine2" {
		t.Fatalf("lookup n1 after its replacement = %s, %v; want mine2 by name", got.ID, err)
	}
	// Names are per team.
	replaced, err = s.CreateSnapshot(ctx, snapshot("t1", "mine", "team-b", base))
	must(t, "same name, other team", err)
	if replaced != nil {
		t.Fatalf("another team's snapshot replaced %+v", replaced)
	}

	// Racing creates of one name leave exactly one holder and every other record deleted
	// or refused.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.CreateSnapshot(ctx, snapshot(fmt.Sprintf("r%d", i), "race", "", base))
		}()
	}
	wg.Wait()
	page, _, err := s.ListSnapshots(ctx, store.SnapshotFilter{NameOrID: "race"})
	must(t, "list race", err)
	if len(page) != 1 {
		t.Fatalf("%d snapshots hold the name race (errors %v), want 1", len(page), errs)
	}
}

func testSnapshotPaging(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	var want []string
	for i := range 7 {
		sn := snapshot(fmt.Sprintf("p%d", i), "", "", base.Add(time.Duration(i%3)*time.Second))
		if i == 2 {
			sn.SourceSandboxID = "special"
		}
		_, err := s.CreateSnapshot(ctx, sn)
		must(t, "create", err)
	}
	// Newest first, ties broken by ID descending.
	want = []string{"p5", "p2", "p4", "p1", "p6", "p3", "p0"}
	var got []string
	f := store.SnapshotFilter{Limit: 3}
	for pages := 0; ; pages++ {
		page, next, err := s.ListSnapshots(ctx, f)
		must(t, "page", err)
		if len(page) > 3 || pages > 5 {
			t.Fatalf("page %d has %d snapshots", pages, len(page))
		}
		for _, sn := range page {
			got = append(got, sn.ID)
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paged = %v, want %v", got, want)
	}
	page, _, err := s.ListSnapshots(ctx, store.SnapshotFilter{SourceSandboxID: "special"})
	must(t, "by source", err)
	if len(page) != 1 || page[0].ID != "p2" {
		t.Fatalf("by source = %+v, want p2", page)
	}
	_, _, err = s.ListSnapshots(ctx, store.SnapshotFilter{Cursor: "garbage"})
	wantErr(t, "bad cursor", err, store.ErrInvalidCursor)
}
