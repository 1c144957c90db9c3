package main

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/sqlite"
)

// TestHostCommands: the operator lists hosts, drains one (placements stop, the mark shows)
// and undrains it, through a real control plane's API; an unknown host exits 3 and a key of
// another team is refused.
func TestHostCommands(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, other := cp.NewAPIKey(), cp.NewAPIKey()
	if err := cp.RegisterKey(ctx, st, key, "operator", store.DefaultTeam); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := cp.RegisterKey(ctx, st, other, "other", "t-other"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutHost(ctx, store.Host{ID: "host-a", State: store.HostReady, Runtime: "gvisor", RPCAddr: "127.0.0.1:1", ProxyAddr: "127.0.0.1:2",
		CPUs: 2, MemoryTotalMiB: 4096, LastHeartbeat: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	srv := cp.New(cp.Config{Store: st, Log: slog.New(slog.DiscardHandler), AgentToken: "t"})
	hs := httptest.NewServer(srv.APIHandler())
	t.Cleanup(hs.Close)
	for _, k := range []string{"E2B_API_URL", "E2B_API_KEY"} {
		t.Setenv(k, "")
	}
	t.Setenv("HEARTH_API_URL", hs.URL)
	t.Setenv("HEARTH_API_KEY", key)

	runCLI(t, "", "host", "ls").expect(t, 0, "host-a", "")
	runCLI(t, "", "host", "drain", "host-a").expect(t, 0, "host host-a is draining: 0 sandboxes paused", "")
	runCLI(t, "", "host", "ls").expect(t, 0, "ready,draining", "")
	if h, _ := st.Host(ctx, "host-a"); !h.Draining {
		t.Fatalf("host after drain: %+v", h)
	}
	runCLI(t, "", "host", "undrain", "host-a").expect(t, 0, "", "")
	runCLI(t, "", "host", "ls", "--json").expect(t, 0, `"draining": false`, "")
	runCLI(t, "", "host", "drain", "nope").expect(t, 3, "", "host nope not found")
	t.Setenv("HEARTH_API_KEY", other)
	runCLI(t, "", "host", "drain", "host-a").expect(t, 1, "", "operator's team")
}
