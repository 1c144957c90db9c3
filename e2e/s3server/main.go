// Command s3server is a test-only S3-compatible server for the e2e suites that run agents
// with `--artifacts s3://…` (artifacts.test.mjs, cluster.test.mjs): gofakes3 over its
// in-memory backend, with Content-MD5 checks on, as the Go tests of internal/artifacts use it
// in-process. scripts/e2e.sh builds it and names it in HEARTH_E2E_GOFAKES3, so the S3 runs are
// part of `make test`. Nothing of it ships in hearth. Its flags are those of gofakes3's own
// command (memory backend only), so HEARTH_E2E_GOFAKES3 may name either binary.
//
//	s3server -host 127.0.0.1:PORT -initialbucket hearth
//
// It serves until SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	host := flag.String("host", "127.0.0.1:9000", "address to listen on (loopback or a test network's address)")
	backend := flag.String("backend", "memory", "storage backend: memory (the only one; objects are lost when it stops)")
	bucket := flag.String("initialbucket", "", "bucket to create at start")
	flag.Parse()
	if *backend != "memory" {
		log.Fatalf("s3server: -backend %q: only memory is supported", *backend)
	}
	be := s3mem.New()
	if *bucket != "" {
		if err := be.CreateBucket(*bucket); err != nil {
			log.Fatalf("s3server: create bucket %s: %v", *bucket, err)
		}
	}
	srv := &http.Server{
		Addr:              *host,
		Handler:           gofakes3.New(be, gofakes3.WithIntegrityCheck(true)).Server(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("s3server: %v", err)
	}
}
