package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

func host(id string) store.Host {
	return store.Host{
		ID:                 id,
		RPCAddr:            "10.0.0.1:5008",
		ProxyAddr:          "10.0.0.1:5007",
		Runtime:            "gvisor",
		State:              store.HostReady,
		CPUs:               16,
		MemoryTotalMiB:     64 << 10,
		MemoryAvailableMiB: 60 << 10,
		MemoryCommittedMiB: 8 << 30, // beyond 32 bits: the columns are BIGINT
		SandboxesRunning:   3,
		SandboxesPaused:    1,
		CPUsCommitted:      6,
		MaxSandboxes:       20,
		RegisteredAt:       base,
		LastHeartbeat:      base.Add(time.Second),
	}
}

func testHosts(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	h2, h1 := host("h2"), host("h1")
	must(t, "put h2", s.PutHost(ctx, h2))
	must(t, "put h1", s.PutHost(ctx, h1))
	got, err := s.Host(ctx, "h1")
	must(t, "get", err)
	if got != h1 {
		t.Fatalf("get:\n got %+v\nwant %+v", got, h1)
	}
	_, err = s.Host(ctx, "nope")
	wantErr(t, "unknown host", err, store.ErrNotFound)

	// An update (a heartbeat) changes everything but the registration time.
	upd := h1
	upd.State, upd.SandboxesRunning, upd.MemoryAvailableMiB, upd.CPUsCommitted, upd.MaxSandboxes = store.HostDown, 0, 1, 0, 50
	upd.RegisteredAt, upd.LastHeartbeat = base.Add(time.Hour), base.Add(time.Hour)
	must(t, "update", s.PutHost(ctx, upd))
	want := upd
	want.RegisteredAt = base
	if got, err := s.Host(ctx, "h1"); err != nil || got != want {
		t.Fatalf("after update: %+v, %v\nwant %+v", got, err, want)
	}

	list, err := s.ListHosts(ctx)
	must(t, "list", err)
	if !reflect.DeepEqual(list, []store.Host{want, h2}) {
		t.Fatalf("list:\n got %+v\nwant %+v", list, []store.Host{want, h2})
	}
	// Draining is the operator's: a heartbeat (PutHost) neither sets nor clears it.
	must(t, "drain", s.SetHostDraining(ctx, "h1", true))
	beat := want
	beat.Draining = false
	must(t, "heartbeat while draining", s.PutHost(ctx, beat))
	if got, _ := s.Host(ctx, "h1"); !got.Draining {
		t.Fatalf("a heartbeat cleared draining: %+v", got)
	}
	must(t, "undrain", s.SetHostDraining(ctx, "h1", false))
	beat.Draining = true
	must(t, "heartbeat after undrain", s.PutHost(ctx, beat))
	if got, _ := s.Host(ctx, "h1"); got.Draining {
		t.Fatalf("a heartbeat set draining: %+v", got)
	}
	wantErr(t, "drain unknown host", s.SetHostDraining(ctx, "nope", true), store.ErrNotFound)

	// MarkHostDown acts only on a ready host silent since the given time, once.
	for _, c := range []struct {
		name        string
		state       string
		lastBeat    time.Time
		silentSince time.Time
		want        bool
	}{
		{"silent ready host", store.HostReady, base, base.Add(time.Second), true},
		{"heartbeat after the cut-off", store.HostReady, base.Add(2 * time.Second), base.Add(time.Second), false},
		{"heartbeat at the cut-off", store.HostReady, base.Add(time.Second), base.Add(time.Second), false},
		{"already down", store.HostDown, base, base.Add(time.Second), false},
	} {
		h := beat
		h.State, h.LastHeartbeat = c.state, c.lastBeat
		must(t, c.name, s.PutHost(ctx, h))
		marked, err := s.MarkHostDown(ctx, "h1", c.silentSince)
		must(t, c.name, err)
		got, _ := s.Host(ctx, "h1")
		wantState := c.state
		if c.want {
			wantState = store.HostDown
		}
		if marked != c.want || got.State != wantState || !got.LastHeartbeat.Equal(c.lastBeat) {
			t.Fatalf("%s: marked %v, host %s beat %v; want marked %v, %s beat %v", c.name, marked, got.State, got.LastHeartbeat, c.want, wantState, c.lastBeat)
		}
	}
	if marked, err := s.MarkHostDown(ctx, "nope", base.Add(time.Hour)); err != nil || marked {
		t.Fatalf("mark unknown host down: %v %v, want false and no error", marked, err)
	}

	must(t, "delete", s.DeleteHost(ctx, "h1"))
	wantErr(t, "delete again", s.DeleteHost(ctx, "h1"), store.ErrNotFound)
	_, err = s.Host(ctx, "h1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

// testHostClaim: ClaimHost sets a token on a new or token-less host, never over another
// token, and PutHost (a heartbeat) never changes a stored token.
func testHostClaim(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	h := host("h1")
	h.TokenHash = "hash-a"
	must(t, "claim new", s.ClaimHost(ctx, h))
	if got, err := s.Host(ctx, "h1"); err != nil || got != h {
		t.Fatalf("after claim: %+v, %v\nwant %+v", got, err, h)
	}

	thief := host("h1")
	thief.RPCAddr, thief.TokenHash = "10.9.9.9:5008", "hash-b"
	wantErr(t, "claim held ID", s.ClaimHost(ctx, thief), store.ErrConflict)
	if got, _ := s.Host(ctx, "h1"); got != h {
		t.Fatalf("a refused claim changed the host: %+v", got)
	}

	upd := h
	upd.SandboxesRunning, upd.TokenHash = 7, "hash-c"
	must(t, "put", s.PutHost(ctx, upd))
	if got, _ := s.Host(ctx, "h1"); got.TokenHash != "hash-a" || got.SandboxesRunning != 7 {
		t.Fatalf("put must keep the token hash and update the rest: %+v", got)
	}

	// A host written without a token (registered before tokens existed) is claimable once.
	legacy := host("h2")
	must(t, "put legacy", s.PutHost(ctx, legacy))
	legacy.TokenHash = "hash-d"
	must(t, "claim legacy", s.ClaimHost(ctx, legacy))
	legacy.TokenHash = "hash-e"
	wantErr(t, "claim legacy twice", s.ClaimHost(ctx, legacy), store.ErrConflict)
	if got, _ := s.Host(ctx, "h2"); got.TokenHash != "hash-d" {
		t.Fatalf("legacy host token: %q, want hash-d", got.TokenHash)
	}
	if err := s.ClaimHost(ctx, host("h3")); err == nil {
		t.Fatal("a claim without a token hash succeeded")
	}
}

// testHostClaimRace: of concurrent claims of one new ID exactly one succeeds, and the
// stored host is the winner's.
func testHostClaimRace(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			h := host("race")
			h.RPCAddr, h.TokenHash = fmt.Sprintf("10.0.0.%d:5008", i), fmt.Sprintf("hash-%d", i)
			errs <- s.ClaimHost(ctx, h)
		}()
	}
	wins := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			wins++
		} else if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("claim: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d claims won, want exactly 1", wins)
	}
	got, err := s.Host(ctx, "race")
	must(t, "get", err)
	if got.RPCAddr != "10.0.0."+strings.TrimPrefix(got.TokenHash, "hash-")+":5008" {
		t.Fatalf("stored host mixes claims: %+v", got)
	}
}
