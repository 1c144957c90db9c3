package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func testAPIKeys(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	k1 := store.APIKey{ID: "k1", Name: "first", Hash: "h1", Mask: "e2b_12…cdef", CreatedAt: base}
	k2 := store.APIKey{ID: "k2", Name: "second", Hash: "h2", Mask: "e2b_34…abcd", CreatedAt: base.Add(time.Second)}
	// Created out of order: the list is ordered by CreatedAt.
	must(t, "create k2", s.CreateAPIKey(ctx, k2))
	must(t, "create k1", s.CreateAPIKey(ctx, k1))

	wantErr(t, "duplicate ID", s.CreateAPIKey(ctx, store.APIKey{ID: "k1", Hash: "other"}), store.ErrConflict)
	wantErr(t, "duplicate hash", s.CreateAPIKey(ctx, store.APIKey{ID: "k3", Hash: "h1"}), store.ErrConflict)

	keys, err := s.ListAPIKeys(ctx)
	must(t, "list", err)
	if want := []store.APIKey{k1, k2}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("list:\n got %+v\nwant %+v", keys, want)
	}

	_, err = s.APIKeyByHash(ctx, "nope")
	wantErr(t, "unknown hash", err, store.ErrNotFound)

	before := time.Now().Add(-time.Millisecond)
	got, err := s.APIKeyByHash(ctx, "h1")
	must(t, "by hash", err)
	if got.LastUsedAt == nil || got.LastUsedAt.Before(before) || got.LastUsedAt.After(time.Now()) {
		t.Fatalf("LastUsedAt = %v, want about now", got.LastUsedAt)
	}
	used := *got.LastUsedAt
	got.LastUsedAt = nil
	if got != k1 {
		t.Fatalf("by hash: got %+v, want %+v", got, k1)
	}
	keys, err = s.ListAPIKeys(ctx)
	must(t, "list after use", err)
	if keys[0].LastUsedAt == nil || !keys[0].LastUsedAt.Equal(used) || keys[1].LastUsedAt != nil {
		t.Fatalf("after use: LastUsedAt %v, %v; want %v, nil", keys[0].LastUsedAt, keys[1].LastUsedAt, used)
	}

	must(t, "delete", s.DeleteAPIKey(ctx, "k1"))
	wantErr(t, "delete again", s.DeleteAPIKey(ctx, "k1"), store.ErrNotFound)
	_, err = s.APIKeyByHash(ctx, "h1")
	wantErr(t, "by hash after delete", err, store.ErrNotFound)
	keys, err = s.ListAPIKeys(ctx)
	must(t, "list after delete", err)
	if len(keys) != 1 || keys[0].ID != "k2" {
		t.Fatalf("after delete: %+v, want only k2", keys)
	}
}
