package postgres

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/postgres/pgtest"
	"github.com/hearthsh/hearth/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestContract(t *testing.T) {
	var (
		mu   sync.Mutex
		urls = map[*testing.T]string{}
	)
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		u, ok := urls[t]
		mu.Unlock()
		if !ok {
			// The same database for every call with this t is what the reopen test needs.
			u = pgtest.NewDatabase(t)
			mu.Lock()
			urls[t] = u
			mu.Unlock()
		}
		s, err := Open(context.Background(), u)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestConcurrentOpen starts several stores on one new database at once, as replicas
// starting together do: the advisory lock must keep their migrations from racing.
func TestConcurrentOpen(t *testing.T) {
	u := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, u) })
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

// BenchmarkList: control plane list latency over storetest.BenchRecords sandboxes.
func BenchmarkList(b *testing.B) {
	s, err := Open(context.Background(), pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchList(b, s)
}
