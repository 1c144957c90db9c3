package storetest

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func testTemplateTags(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "put template", s.PutTemplate(ctx, template("tt", base, "tagged")))
	v1 := store.TemplateTag{TemplateID: "tt", Tag: "v1", BuildID: "build-1", CreatedAt: base}
	def := store.TemplateTag{TemplateID: "tt", Tag: store.DefaultTag, BuildID: "build-1", CreatedAt: base}
	must(t, "set v1", s.SetTemplateTag(ctx, v1))
	must(t, "set default", s.SetTemplateTag(ctx, def))
	wantErr(t, "tag of an unknown template", s.SetTemplateTag(ctx, store.TemplateTag{TemplateID: "nope", Tag: "v1", BuildID: "b"}), store.ErrNotFound)

	got, err := s.TemplateTag(ctx, "tt", "v1")
	must(t, "get v1", err)
	if got != v1 {
		t.Fatalf("v1 = %+v, want %+v", got, v1)
	}
	_, err = s.TemplateTag(ctx, "tt", "v2")
	wantErr(t, "unknown tag", err, store.ErrNotFound)

	// Moving a tag points it at the new build and dates it anew.
	moved := store.TemplateTag{TemplateID: "tt", Tag: "v1", BuildID: "build-2", CreatedAt: base.Add(time.Minute)}
	must(t, "move v1", s.SetTemplateTag(ctx, moved))
	list, err := s.ListTemplateTags(ctx, "tt")
	must(t, "list", err)
	if want := []store.TemplateTag{def, moved}; !reflect.DeepEqual(list, want) {
		t.Fatalf("tags:\n got %+v\nwant %+v", list, want)
	}
	if list, err := s.ListTemplateTags(ctx, "nope"); err != nil || len(list) != 0 {
		t.Fatalf("tags of an unknown template: %+v, %v", list, err)
	}

	// What uses a build: tags, sandboxes and snapshots that record it.
	users := func(build string) int {
		t.Helper()
		n, err := s.TemplateBuildUsers(ctx, build)
		must(t, "users of "+build, err)
		return n
	}
	if a, b := users("build-1"), users("build-2"); a != 1 || b != 1 {
		t.Fatalf("users: build-1 %d, build-2 %d; want 1 and 1 (a tag each)", a, b)
	}
	sb := sandbox("sb-tags", base)
	sb.BuildID = "build-3"
	must(t, "create sandbox", s.CreateSandbox(ctx, sb))
	if got, err := s.Sandbox(ctx, sb.ID); err != nil || got.BuildID != "build-3" {
		t.Fatalf("sandbox build: %q, %v", got.BuildID, err)
	}
	snap := snapshot("snap-tags", "", store.DefaultTeam, base)
	snap.BuildID = "build-3"
	_, err = s.CreateSnapshot(ctx, snap)
	must(t, "create snapshot", err)
	if got, err := s.Snapshot(ctx, store.DefaultTeam, snap.ID); err != nil || got.BuildID != "build-3" {
		t.Fatalf("snapshot build: %q, %v", got.BuildID, err)
	}
	if n := users("build-3"); n != 2 {
		t.Fatalf("users of build-3: %d, want 2 (a sandbox and a snapshot)", n)
	}
	must(t, "delete sandbox", s.DeleteSandbox(ctx, sb.ID))
	must(t, "delete snapshot", s.DeleteSnapshot(ctx, snap.ID))
	if n := users("build-3"); n != 0 {
		t.Fatalf("users of build-3 after both went: %d", n)
	}

	must(t, "delete v1", s.DeleteTemplateTag(ctx, "tt", "v1"))
	wantErr(t, "delete v1 again", s.DeleteTemplateTag(ctx, "tt", "v1"), store.ErrNotFound)
	if n := users("build-2"); n != 0 {
		t.Fatalf("users of build-2 after its tag went: %d", n)
	}

	// Replicas moving one tag at once leave it on one of their builds.
	var wg sync.WaitGroup
	for _, b := range []string{"race-a", "race-b", "race-c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.SetTemplateTag(ctx, store.TemplateTag{TemplateID: "tt", Tag: "race", BuildID: b}); err != nil {
				t.Errorf("set race tag to %s: %v", b, err)
			}
		}()
	}
	wg.Wait()
	if got, err := s.TemplateTag(ctx, "tt", "race"); err != nil || (got.BuildID != "race-a" && got.BuildID != "race-b" && got.BuildID != "race-c") {
		t.Fatalf("raced tag: %+v, %v", got, err)
	}

	// A template's tags go with it.
	must(t, "delete template", s.DeleteTemplate(ctx, "tt"))
	if list, err := s.ListTemplateTags(ctx, "tt"); err != nil || len(list) != 0 {
		t.Fatalf("tags of a deleted template: %+v, %v", list, err)
	}
}
