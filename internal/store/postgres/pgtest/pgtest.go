// Package pgtest gives tests a real PostgreSQL database. With HEARTH_TEST_DATABASE_URL set
// it uses that server; otherwise it starts a throwaway server of its own (initdb into a
// temporary directory, listening only on a unix socket there) and removes it afterwards.
// When no server can be had, tests skip, or fail if HEARTH_REQUIRE_POSTGRES=1 (make test
// sets it, so that CI cannot pass without having run them).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables the harness reads.
const (
	EnvURL     = "HEARTH_TEST_DATABASE_URL"
	EnvRequire = "HEARTH_REQUIRE_POSTGRES"
)

var (
	srv    *server
	srvErr error
	once   sync.Once
	dbSeq  atomic.Int64
	prefix = "hearth_test_" + randomHex() + "_"
)

// Main runs the package's tests and then stops the server the harness started, if any.
// Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if srv != nil {
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// NewDatabase creates an empty database for t and returns its URL. The database is dropped
// in t's cleanup, which runs after the cleanups t registers later (closing pools on it).
func NewDatabase(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		srv, srvErr = start(ctx)
	})
	if srvErr != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("PostgreSQL is required (%s=1) but unavailable: %v", EnvRequire, srvErr)
		}
		t.Skipf("no PostgreSQL (set %s, or install Debian's postgresql package; %s=1 makes this fatal): %v",
			EnvURL, EnvRequire, srvErr)
	}
	name := fmt.Sprintf("%s%d", prefix, dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is ours ([a-z0-9_]), so it needs no quoting.
	if err := adminExec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(srv.url, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// adminExec runs one statement on the server's maintenance database.
func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, srv.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase points a postgres:// URL or a keyword/value DSN at another database.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", EnvURL, err) // not echoed: it may hold a password
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil // a later keyword wins
}

func randomHex() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
