package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/storetest"
)

func TestContract(t *testing.T) {
	var (
		mu    sync.Mutex
		paths = map[*testing.T]string{}
	)
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		path, ok := paths[t]
		if !ok {
			// The same file for every call with this t is what the reopen test needs.
			path = filepath.Join(t.TempDir(), "hearth.db")
			paths[t] = path
		}
		mu.Unlock()
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestConcurrentOpen opens one new file from several goroutines, as control planes that
// share a data directory might: each must see the schema migrated exactly once.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hearth.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("open %d: %v", i, errs[i])
		}
		defer stores[i].Close()
	}
	for i, s := range stores {
		if err := s.PutHost(ctx, store.Host{ID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
	}
	hosts, err := stores[0].ListHosts(ctx)
	if err != nil || len(hosts) != n {
		t.Fatalf("hosts seen by store 0: %d, %v; want %d", len(hosts), err, n)
	}
}

// TestPathWithURISyntax opens a file whose name holds characters that mean something in a
// file: URI; the database must land at exactly that path.
func TestPathWithURISyntax(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?x=1#frag")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "db%20.sqlite")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not at its path: %v", err)
	}
}

// BenchmarkList: control plane list latency over storetest.BenchRecords sandboxes.
func BenchmarkList(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "hearth.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchList(b, s)
}
