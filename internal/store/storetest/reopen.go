package storetest

import (
	"reflect"
	"testing"

	"github.com/hearthsh/hearth/internal/store"
)

// testReopen checks that records survive closing the store and opening it again, which also
// runs the migrations a second time.
func testReopen(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	sb := sandbox("sb1", base)
	sb.Metadata = specialMetadata
	tpl := template("t1", base, "alias")
	key := store.APIKey{ID: "k1", TeamID: store.DefaultTeam, Name: "key", Hash: "h1", Mask: "m", CreatedAt: base}
	must(t, "create sandbox", s.CreateSandbox(ctx, sb))
	must(t, "put template", s.PutTemplate(ctx, tpl))
	must(t, "create key", s.CreateAPIKey(ctx, key))
	must(t, "put host", s.PutHost(ctx, host("h1")))
	updated, err := s.UpdateSandbox(ctx, "sb1", func(sb *store.Sandbox) error { sb.State = store.StatePaused; return nil })
	must(t, "update", err)
	must(t, "close", s.Close())

	s = open(t)
	if got := getSandbox(t, s, "sb1"); !reflect.DeepEqual(got, updated) {
		t.Fatalf("sandbox after reopen:\n got %+v\nwant %+v", got, updated)
	}
	if got := getTemplate(t, s, "alias"); !reflect.DeepEqual(got, tpl) {
		t.Fatalf("template after reopen:\n got %+v\nwant %+v", got, tpl)
	}
	if got, err := s.Host(ctx, "h1"); err != nil || got != host("h1") {
		t.Fatalf("host after reopen: %+v, %v", got, err)
	}
	got, err := s.APIKeyByHash(ctx, "h1")
	must(t, "key after reopen", err)
	if got.ID != "k1" {
		t.Fatalf("key after reopen: %+v", got)
	}
	// The reopened store writes too.
	must(t, "create after reopen", s.CreateSandbox(ctx, sandbox("sb2", base)))
	wantErr(t, "duplicate after reopen", s.CreateSandbox(ctx, sandbox("sb1", base)), store.ErrConflict)
}
