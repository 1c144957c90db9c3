package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func testTeams(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	// The migrations make the default team; it is always there.
	def, err := s.Team(ctx, store.DefaultTeam)
	must(t, "default team", err)
	if def.ID != store.DefaultTeam || def.Name != store.DefaultTeam {
		t.Fatalf("default team = %+v", def)
	}
	acme := store.Team{ID: "t-acme", Name: "acme", CreatedAt: base}
	must(t, "create acme", s.CreateTeam(ctx, acme))
	wantErr(t, "duplicate ID", s.CreateTeam(ctx, store.Team{ID: "t-acme", Name: "other"}), store.ErrConflict)
	wantErr(t, "duplicate name", s.CreateTeam(ctx, store.Team{ID: "t-2", Name: "acme"}), store.ErrConflict)
	for _, key := range []string{"t-acme", "acme"} {
		got, err := s.Team(ctx, key)
		must(t, "team "+key, err)
		if got != acme {
			t.Fatalf("team %s = %+v, want %+v", key, got, acme)
		}
	}
	_, err = s.Team(ctx, "nope")
	wantErr(t, "unknown team", err, store.ErrNotFound)
	teams, err := s.ListTeams(ctx)
	must(t, "list", err)
	if len(teams) != 2 || teams[0].ID != store.DefaultTeam || teams[1] != acme {
		t.Fatalf("teams = %+v, want default then acme", teams)
	}
}

func testAPIKeys(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "create team", s.CreateTeam(ctx, store.Team{ID: "t2", Name: "second team"}))
	k1 := store.APIKey{ID: "k1", TeamID: store.DefaultTeam, Name: "first", Hash: "h1", Mask: "e2b_12…cdef", CreatedAt: base}
	k2 := store.APIKey{ID: "k2", TeamID: store.DefaultTeam, Name: "second", Hash: "h2", Mask: "e2b_34…abcd", CreatedAt: base.Add(time.Second)}
	k3 := store.APIKey{ID: "k3", TeamID: "t2", Name: "other team", Hash: "h3", Mask: "e2b_56…ef01", CreatedAt: base.Add(2 * time.Second)}
	// Created out of order: the list is ordered by CreatedAt.
	must(t, "create k2", s.CreateAPIKey(ctx, k2))
	must(t, "create k1", s.CreateAPIKey(ctx, k1))
	must(t, "create k3", s.CreateAPIKey(ctx, k3))

	wantErr(t, "duplicate ID", s.CreateAPIKey(ctx, store.APIKey{ID: "k1", TeamID: store.DefaultTeam, Hash: "other"}), store.ErrConflict)
	wantErr(t, "duplicate hash", s.CreateAPIKey(ctx, store.APIKey{ID: "k9", TeamID: store.DefaultTeam, Hash: "h1"}), store.ErrConflict)
	wantErr(t, "no team", s.CreateAPIKey(ctx, store.APIKey{ID: "k8", Hash: "h8"}), store.ErrNoTeam)
	wantErr(t, "unknown team", s.CreateAPIKey(ctx, store.APIKey{ID: "k7", TeamID: "nope", Hash: "h7"}), store.ErrNotFound)

	for _, tc := range []struct {
		team string
		want []store.APIKey
	}{
		{"", []store.APIKey{k1, k2, k3}},
		{store.DefaultTeam, []store.APIKey{k1, k2}},
		{"t2", []store.APIKey{k3}},
		{"nope", nil},
	} {
		keys, err := s.ListAPIKeys(ctx, tc.team)
		must(t, "list "+tc.team, err)
		if len(keys) != len(tc.want) || (len(keys) > 0 && !reflect.DeepEqual(keys, tc.want)) {
			t.Fatalf("list team %q:\n got %+v\nwant %+v", tc.team, keys, tc.want)
		}
	}

	_, err := s.APIKeyByHash(ctx, "nope")
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
	keys, err := s.ListAPIKeys(ctx, store.DefaultTeam)
	must(t, "list after use", err)
	if keys[0].LastUsedAt == nil || !keys[0].LastUsedAt.Equal(used) || keys[1].LastUsedAt != nil {
		t.Fatalf("after use: LastUsedAt %v, %v; want %v, nil", keys[0].LastUsedAt, keys[1].LastUsedAt, used)
	}

	must(t, "delete", s.DeleteAPIKey(ctx, "k1"))
	wantErr(t, "delete again", s.DeleteAPIKey(ctx, "k1"), store.ErrNotFound)
	_, err = s.APIKeyByHash(ctx, "h1")
	wantErr(t, "by hash after delete", err, store.ErrNotFound)
	keys, err = s.ListAPIKeys(ctx, store.DefaultTeam)
	must(t, "list after delete", err)
	if len(keys) != 1 || keys[0].ID != "k2" {
		t.Fatalf("after delete: %+v, want only k2", keys)
	}
}
