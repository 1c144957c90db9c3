package artifacts

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// storeCase is one implementation under the contract test, with a way to change an
// object's bytes behind the store's back (bit rot, a bad disk, a tampering peer).
type storeCase struct {
	name    string
	open    func(t *testing.T) Store
	corrupt func(t *testing.T, s Store, d Digest, b []byte)
}

func dirCase() storeCase {
	return storeCase{
		name: "dir",
		open: func(t *testing.T) Store {
			s, err := NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		corrupt: func(t *testing.T, s Store, d Digest, b []byte) {
			p, _ := s.(*Dir).path(d)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// s3Case runs an in-process S3 server (gofakes3, in memory) on loopback and talks to it
// over HTTP with the real client, as an agent does.
func s3Case() storeCase {
	backends := map[Store]*s3mem.Backend{}
	var mu sync.Mutex
	return storeCase{
		name: "s3",
		open: func(t *testing.T) Store {
			be := s3mem.New()
			if err := be.CreateBucket("hearth"); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(gofakes3.New(be, gofakes3.WithIntegrityCheck(true)).Server())
			t.Cleanup(srv.Close)
			cfg, err := ParseS3URL("s3://hearth/artifacts/test?region=us-east-1&endpoint=" + srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Creds = credentials.NewStaticV4("test-key", "test-secret", "")
			cfg.PartSize = 5 << 20 // the smallest S3 allows: the large objects below go multipart
			s, err := NewS3(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			backends[s] = be
			mu.Unlock()
			return s
		},
		corrupt: func(t *testing.T, s Store, d Digest, b []byte) {
			mu.Lock()
			be := backends[s]
			mu.Unlock()
			key, _ := s.(*S3).key(d)
			if _, err := be.PutObject("hearth", key, map[string]string{}, bytes.NewReader(b), int64(len(b)), nil); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestStoreContract(t *testing.T) {
	for _, sc := range []storeCase{dirCase(), s3Case()} {
		t.Run(sc.name, func(t *testing.T) {
			for _, tc := range contract {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					tc.run(t, ctx, sc, sc.open(t))
				})
			}
		})
	}
}

var contract = []struct {
	name string
	run  func(t *testing.T, ctx context.Context, sc storeCase, s Store)
}{
	{"put then get, stat and fetch", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		// 11 MiB: more than one multipart part for S3.
		for _, data := range [][]byte{[]byte("hello"), {}, randomBytes(t, 11<<20)} {
			d, err := PutBytes(ctx, s, data)
			if err != nil {
				t.Fatal(err)
			}
			if d != DigestOf(data) {
				t.Fatalf("digest %s, want %s", d, DigestOf(data))
			}
			if n, err := s.Stat(ctx, d); err != nil || n != int64(len(data)) {
				t.Fatalf("stat: %d, %v; want %d", n, err, len(data))
			}
			got, err := GetBytes(ctx, s, d, 64<<20)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("get: %d bytes, %v", len(got), err)
			}
			dst := filepath.Join(t.TempDir(), "f")
			if err := FetchFile(ctx, s, d, dst, 0o600); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(dst); !bytes.Equal(b, data) {
				t.Fatalf("fetched %d bytes, not what was put", len(b))
			}
		}
	}},
	{"a local file round-trips; a second put keeps the object", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		src := filepath.Join(t.TempDir(), "src")
		data := randomBytes(t, 300<<10)
		os.WriteFile(src, data, 0o600)
		d, n, err := PutFile(ctx, s, src)
		if err != nil || n != int64(len(data)) || d != DigestOf(data) {
			t.Fatalf("PutFile: %s %d %v", d, n, err)
		}
		if d2, _, err := PutFile(ctx, s, src); err != nil || d2 != d {
			t.Fatalf("second PutFile: %s %v", d2, err)
		}
	}},
	{"a download resumes from a partial file", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		data := randomBytes(t, 1<<20)
		d, _ := PutBytes(ctx, s, data)
		dst := filepath.Join(t.TempDir(), "f")
		os.WriteFile(dst+".part", data[:1000], 0o600)
		rc, err := s.Open(ctx, d, 1000)
		if err != nil {
			t.Fatal(err)
		}
		rest := new(bytes.Buffer)
		rest.ReadFrom(rc)
		rc.Close()
		if !bytes.Equal(rest.Bytes(), data[1000:]) {
			t.Fatalf("Open at 1000: %d bytes, not the object's tail", rest.Len())
		}
		if err := FetchFile(ctx, s, d, dst, 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(dst); !bytes.Equal(b, data) {
			t.Fatal("resumed download differs")
		}
		// A stale part that is not a prefix of the object: detected, and the download
		// starts over.
		os.Remove(dst)
		os.WriteFile(dst+".part", bytes.Repeat([]byte{'x'}, 1000), 0o600)
		if err := FetchFile(ctx, s, d, dst, 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(dst); !bytes.Equal(b, data) {
			t.Fatal("download over a stale part differs")
		}
	}},
	{"missing objects are not found", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		d := DigestOf([]byte("never stored"))
		if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat: %v, want ErrNotFound", err)
		}
		if _, err := GetBytes(ctx, s, d, 10); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get: %v, want ErrNotFound", err)
		}
		dst := filepath.Join(t.TempDir(), "f")
		if err := FetchFile(ctx, s, d, dst, 0o600); !errors.Is(err, ErrNotFound) {
			t.Fatalf("fetch: %v, want ErrNotFound", err)
		}
		assertAbsent(t, dst, dst+".part")
		if err := s.Delete(ctx, d); err != nil {
			t.Fatalf("delete missing: %v", err)
		}
	}},
	{"bytes that do not match the digest are refused", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		d := DigestOf([]byte("the real content"))
		err := s.Put(ctx, d, strings.NewReader("something else"), int64(len("something else")))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("put: %v, want ErrCorrupt", err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after refused put, stat: %v, want ErrNotFound", err)
		}
	}},
	{"a corrupt object is detected", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		data := randomBytes(t, 64<<10)
		d, _ := PutBytes(ctx, s, data)
		bad := bytes.Clone(data)
		bad[100] ^= 1
		sc.corrupt(t, s, d, bad)
		if _, err := GetBytes(ctx, s, d, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("get: %v, want ErrCorrupt", err)
		}
		dst := filepath.Join(t.TempDir(), "f")
		if err := FetchFile(ctx, s, d, dst, 0o600); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("fetch: %v, want ErrCorrupt", err)
		}
		assertAbsent(t, dst, dst+".part")
	}},
	{"concurrent puts of one digest leave one good object", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		data := randomBytes(t, 6<<20)
		d := DigestOf(data)
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for range 6 {
			wg.Go(func() { errs <- s.Put(ctx, d, bytes.NewReader(data), int64(len(data))) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent put: %v", err)
			}
		}
		if got, err := GetBytes(ctx, s, d, 8<<20); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("after concurrent puts: %d bytes, %v", len(got), err)
		}
	}},
	{"a cancelled put stores nothing", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		data := randomBytes(t, 1<<20)
		d := DigestOf(data)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, d, bytes.NewReader(data), int64(len(data))); err == nil {
			t.Fatal("put with a cancelled context succeeded")
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after cancelled put, stat: %v, want ErrNotFound", err)
		}
	}},
	{"malformed digests name nothing", func(t *testing.T, ctx context.Context, sc storeCase, s Store) {
		for _, d := range []Digest{"", "sha256:../../etc/passwd", "md5:abc", Digest("sha256:" + strings.Repeat("A", 64))} {
			if _, err := s.Stat(ctx, d); !errors.Is(err, ErrBadDigest) {
				t.Errorf("stat %q: %v, want ErrBadDigest", d, err)
			}
			if err := s.Put(ctx, d, strings.NewReader(""), 0); !errors.Is(err, ErrBadDigest) {
				t.Errorf("put %q: %v, want ErrBadDigest", d, err)
			}
		}
	}},
}

func assertAbsent(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

func TestOpenSpec(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    string // String() of the store; empty: an error
		wantErr string
	}{
		{spec: "s3://bkt/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-1", want: "s3://bkt/some/prefix at 127.0.0.1:9000"},
		{spec: "s3://bkt", want: "s3://bkt at s3.amazonaws.com"},
		{spec: "s3://bkt/p?endpoint=ftp://x", wantErr: "endpoint"},
		{spec: "s3://bkt/p?secret=1", wantErr: "unknown parameter"},
		{spec: "relative/dir", wantErr: "absolute"},
	} {
		s, err := Open(tc.spec, nil)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open(%q): %v, want error with %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil || s.String() != tc.want {
			t.Errorf("Open(%q) = %v, %v; want %s", tc.spec, s, err, tc.want)
		}
	}
	dir := filepath.Join(t.TempDir(), "store")
	if s, err := Open(dir, nil); err != nil || s.String() != dir {
		t.Errorf("Open(dir) = %v, %v", s, err)
	}
}
