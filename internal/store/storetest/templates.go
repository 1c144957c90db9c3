package storetest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func template(id string, created time.Time, aliases ...string) store.Template {
	return store.Template{ID: id, TeamID: store.DefaultTeam, Aliases: aliases, CPUs: 2, MemoryMiB: 512, DiskMiB: 1024,
		EnvdVersion: "0.2.0", BuildID: "b-" + id, BuildStatus: "ready", Public: true,
		Artifact:  "sha256:" + strings.Repeat("e", 64),
		CreatedAt: created, UpdatedAt: created}
}

func getTemplate(t *testing.T, s store.Store, idOrAlias string) store.Template {
	t.Helper()
	got, err := s.Template(ctxFor(t), idOrAlias)
	must(t, "template "+idOrAlias, err)
	return got
}

func testTemplates(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	t1 := template("t1", base, "python", "base", "python") // duplicates collapse
	must(t, "put t1", s.PutTemplate(ctx, t1))
	want := t1
	want.Aliases = []string{"base", "python"} // sorted
	for _, key := range []string{"t1", "python", "base"} {
		if got := getTemplate(t, s, key); !reflect.DeepEqual(got, want) {
			t.Fatalf("template %s:\n got %+v\nwant %+v", key, got, want)
		}
	}
	_, err := s.Template(ctx, "nope")
	wantErr(t, "unknown template", err, store.ErrNotFound)

	t0 := template("t0", base.Add(time.Hour)) // no aliases, created later
	t0.Public = false
	must(t, "put t0", s.PutTemplate(ctx, t0))
	if got := getTemplate(t, s, "t0"); len(got.Aliases) != 0 || got.Public {
		t.Fatalf("t0 = %+v, want no aliases and not public", got)
	}

	// Replacing keeps CreatedAt and swaps the aliases.
	repl := template("t1", base.Add(2*time.Hour), "node")
	repl.UpdatedAt = base.Add(3 * time.Hour)
	repl.CPUs, repl.BuildStatus, repl.Public = 4, "building", false
	must(t, "replace t1", s.PutTemplate(ctx, repl))
	want = repl
	want.CreatedAt = base
	if got := getTemplate(t, s, "node"); !reflect.DeepEqual(got, want) {
		t.Fatalf("replaced:\n got %+v\nwant %+v", got, want)
	}
	_, err = s.Template(ctx, "python")
	wantErr(t, "dropped alias", err, store.ErrNotFound)

	// An ID wins over an equal alias of another template.
	must(t, "put t2", s.PutTemplate(ctx, template("t2", base.Add(4*time.Hour), "t0")))
	if got := getTemplate(t, s, "t0"); got.ID != "t0" {
		t.Fatalf("template t0 resolved to %s, want the template with that ID", got.ID)
	}
	if err := s.PutTemplate(ctx, template("t3", base, "")); err == nil {
		t.Fatal("empty alias accepted")
	}

	list, err := s.ListTemplates(ctx)
	must(t, "list", err)
	var ids []string
	for _, tp := range list {
		ids = append(ids, tp.ID)
	}
	if want := []string{"t1", "t0", "t2"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("list order %v, want %v (by CreatedAt)", ids, want)
	}
	if !reflect.DeepEqual(list[0].Aliases, []string{"node"}) || !reflect.DeepEqual(list[2].Aliases, []string{"t0"}) {
		t.Fatalf("list aliases %v, %v", list[0].Aliases, list[2].Aliases)
	}

	must(t, "delete t1", s.DeleteTemplate(ctx, "t1"))
	wantErr(t, "delete again", s.DeleteTemplate(ctx, "t1"), store.ErrNotFound)
	_, err = s.Template(ctx, "node")
	wantErr(t, "alias of deleted template", err, store.ErrNotFound)
	// The deleted template's alias is free again.
	must(t, "reuse alias", s.PutTemplate(ctx, template("t4", base, "node")))
}

func testTemplateAliasConflict(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "put a", s.PutTemplate(ctx, template("a", base, "shared", "mine")))
	wantErr(t, "new template with a taken alias",
		s.PutTemplate(ctx, template("b", base, "fresh", "shared")), store.ErrConflict)
	// The failed put left nothing behind: neither b nor its other alias.
	for _, key := range []string{"b", "fresh"} {
		_, err := s.Template(ctx, key)
		wantErr(t, "after failed put: "+key, err, store.ErrNotFound)
	}
	must(t, "put b", s.PutTemplate(ctx, template("b", base, "fresh")))
	before := getTemplate(t, s, "b")
	changed := template("b", base, "mine")
	changed.CPUs = 8
	wantErr(t, "existing template taking a taken alias", s.PutTemplate(ctx, changed), store.ErrConflict)
	if got := getTemplate(t, s, "b"); !reflect.DeepEqual(got, before) {
		t.Fatalf("failed replace changed b:\n got %+v\nwant %+v", got, before)
	}
	if got := getTemplate(t, s, "mine"); got.ID != "a" {
		t.Fatalf("alias mine moved to %s", got.ID)
	}
}

// testTemplateTeam checks that a template keeps its team: a put naming another team for an
// existing ID is a conflict and changes nothing.
func testTemplateTeam(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "create team", s.CreateTeam(ctx, store.Team{ID: "t2", Name: "two"}))
	mine := template("mine", base, "mine-alias")
	mine.Public = false
	must(t, "put", s.PutTemplate(ctx, mine))
	theirs := mine
	theirs.TeamID, theirs.BuildID = "t2", "b-hijack"
	wantErr(t, "put by another team", s.PutTemplate(ctx, theirs), store.ErrConflict)
	if got := getTemplate(t, s, "mine"); !reflect.DeepEqual(got, mine) {
		t.Fatalf("after another team's put:\n got %+v\nwant %+v", got, mine)
	}
	noTeam := template("orphan", base)
	noTeam.TeamID = ""
	wantErr(t, "put without team", s.PutTemplate(ctx, noTeam), store.ErrNoTeam)
}
