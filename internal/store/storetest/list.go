package storetest

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

// ids lists the IDs of sandboxes, in order.
func ids(sbs []store.Sandbox) []string {
	out := make([]string, len(sbs))
	for i, sb := range sbs {
		out[i] = sb.ID
	}
	return out
}

// listAll follows cursors to the end, failing on a page larger than the limit or a loop.
func listAll(t *testing.T, s store.Store, f store.SandboxFilter) (all []string, pages int) {
	t.Helper()
	for {
		page, next, err := s.ListSandboxes(ctxFor(t), f)
		must(t, fmt.Sprintf("list page %d", pages+1), err)
		pages++
		if f.Limit > 0 && len(page) > f.Limit {
			t.Fatalf("page %d has %d sandboxes, limit %d", pages, len(page), f.Limit)
		}
		all = append(all, ids(page)...)
		if next == "" {
			return all, pages
		}
		if len(page) == 0 || pages > 50 {
			t.Fatalf("page %d: %d sandboxes and a next cursor", pages, len(page))
		}
		f.Cursor = next
	}
}

func testListFilters(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	mk := func(id, state, tpl, host string, started time.Time) {
		sb := sandbox(id, started)
		sb.State, sb.TemplateID, sb.HostID = state, tpl, host
		must(t, "create "+id, s.CreateSandbox(ctx, sb))
	}
	mk("a", store.StateRunning, "t1", "h1", base)
	mk("b", store.StatePaused, "t1", "h2", base.Add(time.Second))
	mk("c", store.StateRunning, "t2", "h1", base.Add(2*time.Second))
	mk("d", store.StateStarting, "t2", "h2", base.Add(3*time.Second))

	for _, tc := range []struct {
		name string
		f    store.SandboxFilter
		want []string
	}{
		{"all, newest first", store.SandboxFilter{}, []string{"d", "c", "b", "a"}},
		{"all, oldest first", store.SandboxFilter{Ascending: true}, []string{"a", "b", "c", "d"}},
		{"one state", store.SandboxFilter{States: []string{store.StateRunning}}, []string{"c", "a"}},
		{"two states", store.SandboxFilter{States: []string{store.StatePaused, store.StateStarting}}, []string{"d", "b"}},
		{"unknown state", store.SandboxFilter{States: []string{"gone"}}, []string{}},
		{"template", store.SandboxFilter{Template: "t2"}, []string{"d", "c"}},
		{"host", store.SandboxFilter{HostID: "h1"}, []string{"c", "a"}},
		{"template and host", store.SandboxFilter{Template: "t1", HostID: "h2"}, []string{"b"}},
		// At or after: b started exactly at base+1s, and a millisecond later is too late.
		{"started after, inclusive", store.SandboxFilter{StartedAfter: base.Add(time.Second)}, []string{"d", "c", "b"}},
		{"started after, a millisecond late", store.SandboxFilter{StartedAfter: base.Add(time.Second + time.Millisecond)}, []string{"d", "c"}},
		{"started after, a second late", store.SandboxFilter{StartedAfter: base.Add(2 * time.Second)}, []string{"d", "c"}},
		{"started after the last", store.SandboxFilter{StartedAfter: base.Add(4 * time.Second)}, []string{}},
		{"started after, with state", store.SandboxFilter{StartedAfter: base.Add(-time.Hour),
			States: []string{store.StateRunning, store.StatePaused}, Ascending: true}, []string{"a", "b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, next, err := s.ListSandboxes(ctx, tc.f)
			must(t, "list", err)
			if got := ids(page); !reflect.DeepEqual(got, tc.want) || next != "" {
				t.Fatalf("got %v (next %q), want %v and no next page", got, next, tc.want)
			}
		})
	}
	// Pages carry whole records.
	page, _, err := s.ListSandboxes(ctx, store.SandboxFilter{HostID: "h1", Template: "t1"})
	must(t, "list a", err)
	want := sandbox("a", base)
	want.TemplateID, want.HostID = "t1", "h1"
	if len(page) != 1 {
		t.Fatalf("list a: %v", ids(page))
	}
	sameSandbox(t, "listed record", page[0], want)
}

// specialMetadata has keys and values that break naive JSON paths or SQL quoting.
var specialMetadata = map[string]string{
	"user":        "alice",
	"a.b":         "dotted",
	`say "hi"`:    `it's "quoted"`,
	"$.x[0]":      "path-like",
	"it's":        "100%_done",
	"back\\slash": "c:\\dir",
	"ünï cødé 🔥":  "ナ",
	"<&>":         "<&>",
	"":            "empty key",
	"empty":       "",
}

func testListMetadata(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	// m1..m5 carry every special pair; the others miss one pair or differ in one value.
	var want []string
	for i := 1; i <= 5; i++ {
		sb := sandbox(fmt.Sprintf("m%d", i), base.Add(time.Duration(i)*time.Second))
		sb.Metadata = map[string]string{"extra": "x"}
		for k, v := range specialMetadata {
			sb.Metadata[k] = v
		}
		must(t, "create "+sb.ID, s.CreateSandbox(ctx, sb))
		want = append(want, sb.ID)
	}
	slices.Reverse(want)
	i := 0
	for k := range specialMetadata {
		i++
		missing := sandbox(fmt.Sprintf("missing%d", i), base.Add(time.Duration(10+i)*time.Second))
		other := sandbox(fmt.Sprintf("other%d", i), base.Add(time.Duration(40+i)*time.Second))
		missing.Metadata, other.Metadata = map[string]string{}, map[string]string{}
		for k2, v := range specialMetadata {
			if k2 != k {
				missing.Metadata[k2] = v
			}
			other.Metadata[k2] = v
		}
		other.Metadata[k] += "?"
		must(t, "create "+missing.ID, s.CreateSandbox(ctx, missing))
		must(t, "create "+other.ID, s.CreateSandbox(ctx, other))
	}

	// Every pair at once, two per page: the filter runs before paging, so pages are full.
	all, pages := listAll(t, s, store.SandboxFilter{Metadata: specialMetadata, Limit: 2})
	if !reflect.DeepEqual(all, want) || pages != 3 {
		t.Fatalf("all pairs: %v in %d pages, want %v in 3", all, pages, want)
	}
	// Each pair alone also matches the others that carry it.
	for k, v := range specialMetadata {
		all, _ := listAll(t, s, store.SandboxFilter{Metadata: map[string]string{k: v}})
		if len(all) != 5+2*len(specialMetadata)-2 {
			t.Fatalf("metadata %q=%q matched %d sandboxes, want %d: %v", k, v, len(all), 5+2*len(specialMetadata)-2, all)
		}
	}
	page, _, err := s.ListSandboxes(ctx, store.SandboxFilter{Metadata: map[string]string{"user": "alice", "extra": "x"}})
	must(t, "list", err)
	if got := ids(page); !reflect.DeepEqual(got, want) {
		t.Fatalf("two pairs: %v, want %v", got, want)
	}
	page, _, err = s.ListSandboxes(ctx, store.SandboxFilter{Metadata: map[string]string{"user": "ALICE"}})
	must(t, "list", err)
	if len(page) != 0 {
		t.Fatalf("values must match exactly; got %v", ids(page))
	}
}

func testListPaging(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	// Seven sandboxes in three start times: the ID breaks the ties.
	starts := map[string]time.Duration{"p1": 0, "p2": 0, "p3": 0, "p4": 1, "p5": 1, "p6": 2, "p7": 2}
	for id, d := range starts {
		must(t, "create "+id, s.CreateSandbox(ctx, sandbox(id, base.Add(d*time.Second))))
	}
	asc := []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	desc := slices.Clone(asc)
	slices.Reverse(desc)

	for _, tc := range []struct {
		name      string
		ascending bool
		want      []string
	}{{"descending", false, desc}, {"ascending", true, asc}} {
		t.Run(tc.name, func(t *testing.T) {
			all, pages := listAll(t, s, store.SandboxFilter{Limit: 3, Ascending: tc.ascending})
			if !reflect.DeepEqual(all, tc.want) || pages != 3 {
				t.Fatalf("got %v in %d pages, want %v in 3", all, pages, tc.want)
			}
			// An exact multiple of the limit ends without an empty page.
			all, pages = listAll(t, s, store.SandboxFilter{Limit: 7, Ascending: tc.ascending})
			if !reflect.DeepEqual(all, tc.want) || pages != 1 {
				t.Fatalf("limit 7: got %v in %d pages, want %v in 1", all, pages, tc.want)
			}
			// A cursor stays valid with filters and pages the filtered set.
			all, pages = listAll(t, s, store.SandboxFilter{Limit: 1, Ascending: tc.ascending,
				StartedAfter: base.Add(time.Second)})
			if want := tc.want[:4]; !tc.ascending && (!reflect.DeepEqual(all, want) || pages != 4) {
				t.Fatalf("filtered: got %v in %d pages, want %v", all, pages, want)
			}
			if want := tc.want[3:]; tc.ascending && (!reflect.DeepEqual(all, want) || pages != 4) {
				t.Fatalf("filtered: got %v in %d pages, want %v", all, pages, want)
			}
		})
	}
}

func testListLimits(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	for i := range 101 {
		must(t, "create", s.CreateSandbox(ctx, sandbox(fmt.Sprintf("s%03d", i), base.Add(time.Duration(i)*time.Millisecond))))
	}
	for _, limit := range []int{0, 101, 1000} {
		page, next, err := s.ListSandboxes(ctx, store.SandboxFilter{Limit: limit})
		must(t, "list", err)
		if len(page) != 100 || next == "" {
			t.Fatalf("limit %d: %d sandboxes, next %q; want 100 and a next page", limit, len(page), next)
		}
		page, next, err = s.ListSandboxes(ctx, store.SandboxFilter{Limit: limit, Cursor: next})
		must(t, "list", err)
		if got := ids(page); !reflect.DeepEqual(got, []string{"s000"}) || next != "" {
			t.Fatalf("limit %d, second page: %v, next %q", limit, got, next)
		}
	}
}

func testListInvalidCursor(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	for _, id := range []string{"a", "b", "c"} {
		must(t, "create", s.CreateSandbox(ctx, sandbox(id, base)))
	}
	_, descCursor, err := s.ListSandboxes(ctx, store.SandboxFilter{Limit: 1})
	must(t, "list", err)
	if descCursor == "" {
		t.Fatal("no cursor after a first page of 1 out of 3")
	}
	for name, f := range map[string]store.SandboxFilter{
		"not base64":        {Cursor: "!!not a cursor!!"},
		"base64 of garbage": {Cursor: base64.RawURLEncoding.EncodeToString([]byte("garbage"))},
		"other order":       {Cursor: descCursor, Ascending: true},
	} {
		page, next, err := s.ListSandboxes(ctx, f)
		if err == nil {
			t.Fatalf("%s: accepted, returned %v %q", name, ids(page), next)
		}
		wantErr(t, name, err, store.ErrInvalidCursor)
	}
}
