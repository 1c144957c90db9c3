package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

// BenchRecords is how many sandbox records BenchList lists from: a control plane's store
// with many sandboxes, most of them paused, spread over teams.
const BenchRecords = 10_000

// BenchList measures the control plane's list queries (one page of 100, as the API asks)
// over BenchRecords sandboxes in 10 teams, s being empty at the start.
func BenchList(b *testing.B, s store.Store) {
	ctx := context.Background()
	start := time.Now()
	for i := range BenchRecords {
		sb := sandbox(fmt.Sprintf("sb%05d", i), base.Add(time.Duration(i)*time.Second))
		sb.TeamID = fmt.Sprintf("team%d", i%10)
		sb.Metadata = map[string]string{"user": fmt.Sprintf("u%d", i%100)}
		if i%3 != 0 { // a third running
			sb.State = store.StatePaused
		}
		if err := s.CreateSandbox(ctx, sb); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%d records written in %v", BenchRecords, time.Since(start).Round(time.Millisecond))
	for _, bc := range []struct {
		name string
		f    store.SandboxFilter
	}{
		{"team", store.SandboxFilter{TeamID: "team3"}},
		{"team running", store.SandboxFilter{TeamID: "team3", States: []string{store.StateRunning}}},
		{"team metadata", store.SandboxFilter{TeamID: "team3", Metadata: map[string]string{"user": "u13"}}},
		{"all teams", store.SandboxFilter{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				page, _, err := s.ListSandboxes(ctx, bc.f)
				if err != nil {
					b.Fatal(err)
				}
				if len(page) == 0 {
					b.Fatal("empty page")
				}
			}
		})
	}
}
