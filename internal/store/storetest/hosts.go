package storetest

import (
	"reflect"
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
	upd.State, upd.SandboxesRunning, upd.MemoryAvailableMiB = store.HostDown, 0, 1
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
	must(t, "delete", s.DeleteHost(ctx, "h1"))
	wantErr(t, "delete again", s.DeleteHost(ctx, "h1"), store.ErrNotFound)
	_, err = s.Host(ctx, "h1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}
