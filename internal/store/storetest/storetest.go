// Package storetest is the contract every store.Store driver must meet, as one suite that
// each driver's tests run against a real database. Keeping a single suite is what makes
// the drivers interchangeable.
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

// Opener returns a store on storage private to t, empty on the first call for t; a later
// call with the same t must open the same storage again (the reopen test closes the first
// store before). It must close what it opens in t's cleanup and fail t when it cannot open.
type Opener func(t *testing.T) store.Store

// Run runs the contract suite. Subtests run in parallel, so open must be safe for
// concurrent use with different t.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"Teams", testTeams},
		{"APIKeys", testAPIKeys},
		{"TemplateTeam", testTemplateTeam},
		{"SandboxTeam", testSandboxTeam},
		{"Templates", testTemplates},
		{"TemplateAliasConflict", testTemplateAliasConflict},
		{"TemplateBuilds", testTemplateBuilds},
		{"TemplateTags", testTemplateTags},
		{"SandboxCRUD", testSandboxCRUD},
		{"UpdateSandbox", testUpdateSandbox},
		{"UpdateSandboxAtomic", testUpdateSandboxAtomic},
		{"ExpiredSandboxes", testExpiredSandboxes},
		{"ListFilters", testListFilters},
		{"ListMetadata", testListMetadata},
		{"ListPaging", testListPaging},
		{"ListLimits", testListLimits},
		{"ListInvalidCursor", testListInvalidCursor},
		{"Hosts", testHosts},
		{"HostClaim", testHostClaim},
		{"HostClaimRace", testHostClaimRace},
		{"Snapshots", testSnapshots},
		{"SnapshotNames", testSnapshotNames},
		{"SnapshotPaging", testSnapshotPaging},
		{"Context", testContext},
		{"Reopen", testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

// base is a fixed instant at millisecond precision in UTC, the precision and location the
// drivers return, so records compare with ==.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantErr fails t unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
