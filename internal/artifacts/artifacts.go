// Package artifacts is content-addressed storage for what one host makes and another needs:
// the snapshots of paused sandboxes (and, later, template artifacts). Objects are named by
// the SHA-256 of their bytes, so a name never refers to two contents, two hosts storing the
// same bytes store one object, and every download is checked against its name.
//
// Two stores implement Store: a directory (Dir; shared by agents on one machine, or over
// NFS) and an S3-compatible bucket (S3). Open picks one from the agent's --artifacts value.
// Neither ever shows a partial object under its final name: the directory writes a temporary
// file and renames it, S3 makes an object visible only when its (multipart) upload completes.
package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Digest names an object: "sha256:" and the lower-case hex SHA-256 of its bytes.
type Digest string

const digestPrefix = "sha256:"

// DigestOf returns the digest of b.
func DigestOf(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(digestPrefix + hex.EncodeToString(sum[:]))
}

// Hex returns the digest's hex part.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), digestPrefix) }

// Validate checks the digest's form, so a digest from a peer can never name a path outside
// a store.
func (d Digest) Validate() error {
	h, ok := strings.CutPrefix(string(d), digestPrefix)
	if !ok || len(h) != 64 {
		return fmt.Errorf("%w: %q is not sha256:<64 hex digits>", ErrBadDigest, string(d))
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: %q is not sha256:<64 lower-case hex digits>", ErrBadDigest, string(d))
		}
	}
	return nil
}

var (
	// ErrNotFound: the store has no object of that digest.
	ErrNotFound = errors.New("artifact not found")
	// ErrCorrupt: the bytes read or written do not hash to their digest.
	ErrCorrupt = errors.New("artifact does not match its digest")
	// ErrBadDigest: a malformed digest.
	ErrBadDigest = errors.New("malformed artifact digest")
)

// Store is one content-addressed object store. Implementations are safe for concurrent use,
// by several processes and hosts too: putting one digest twice at once leaves one complete
// object.
type Store interface {
	// Put stores size bytes read from r as object d. It fails with ErrCorrupt, leaving no
	// object of that digest that was not there before, when the bytes do not hash to d.
	Put(ctx context.Context, d Digest, r io.Reader, size int64) error
	// Open returns the object's bytes from offset on (a retried download resumes there).
	// It fails with ErrNotFound when there is no such object.
	Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error)
	// Stat returns the object's size, or ErrNotFound.
	Stat(ctx context.Context, d Digest) (int64, error)
	// Delete removes the object; deleting a missing one succeeds.
	Delete(ctx context.Context, d Digest) error
	// String says where the store is, for logs and errors (no credentials).
	String() string
}

// Open returns the store an --artifacts value names: an s3:// URL
// (s3://bucket/prefix?endpoint=http://host:9000&region=r, credentials from the standard
// AWS environment variables) or an absolute directory path.
func Open(spec string, log *slog.Logger) (Store, error) {
	if strings.HasPrefix(spec, "s3://") {
		cfg, err := ParseS3URL(spec)
		if err != nil {
			return nil, err
		}
		return NewS3(cfg, log)
	}
	if !filepath.IsAbs(spec) {
		return nil, fmt.Errorf("artifacts %q: want an absolute directory or s3://bucket/prefix", spec)
	}
	return NewDir(spec)
}

// Timing of transfers: every attempt is bounded (a hung connection cannot stall a pause or
// resume for ever) and failed attempts are retried a few times.
const (
	attempts       = 4
	attemptBase    = 30 * time.Second
	minRate        = 8 << 20 // bytes per second an attempt is allowed for on top of attemptBase
	retryBaseDelay = 200 * time.Millisecond
)

func attemptTimeout(size int64) time.Duration {
	return attemptBase + time.Duration(size/minRate)*time.Second
}

// retry runs op up to attempts times while it fails with an error worth retrying, with a
// bounded, jittered backoff; it stops when ctx ends.
func retry(ctx context.Context, size int64, op func(ctx context.Context) error) error {
	var err error
	for i := range attempts {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(size))
		err = op(actx)
		cancel()
		if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadDigest) || ctx.Err() != nil {
			return err
		}
		if i == attempts-1 {
			break
		}
		d := retryBaseDelay << i
		d += time.Duration(rand.Int64N(int64(d)))
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(d):
		}
	}
	return fmt.Errorf("after %d attempts: %w", attempts, err)
}

// HashFile returns the digest and size of a local file.
func HashFile(path string) (Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return Digest(digestPrefix + hex.EncodeToString(h.Sum(nil))), n, nil
}

// PutFile stores a local file and returns its digest and size. An object of that digest
// and size already in the store is kept as it is (same name, same bytes).
func PutFile(ctx context.Context, s Store, path string) (Digest, int64, error) {
	d, size, err := HashFile(path)
	if err != nil {
		return "", 0, err
	}
	if n, err := s.Stat(ctx, d); err == nil && n == size {
		return d, size, nil
	}
	err = retry(ctx, size, func(ctx context.Context) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return s.Put(ctx, d, f, size)
	})
	if err != nil {
		return "", 0, fmt.Errorf("upload %s to %s: %w", path, s, err)
	}
	return d, size, nil
}

// PutBytes stores b and returns its digest.
func PutBytes(ctx context.Context, s Store, b []byte) (Digest, error) {
	d := DigestOf(b)
	if n, err := s.Stat(ctx, d); err == nil && n == int64(len(b)) {
		return d, nil
	}
	err := retry(ctx, int64(len(b)), func(ctx context.Context) error {
		return s.Put(ctx, d, bytes.NewReader(b), int64(len(b)))
	})
	if err != nil {
		return "", fmt.Errorf("upload %s to %s: %w", d, s, err)
	}
	return d, nil
}

// GetBytes reads a whole object of at most max bytes and checks it against its digest.
func GetBytes(ctx context.Context, s Store, d Digest, max int64) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	var out []byte
	err := retry(ctx, max, func(ctx context.Context) error {
		rc, err := s.Open(ctx, d, 0)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, max+1))
		if err != nil {
			return err
		}
		if int64(len(b)) > max {
			return fmt.Errorf("%s: larger than %d bytes", d, max)
		}
		if DigestOf(b) != d {
			return fmt.Errorf("%w: %s from %s", ErrCorrupt, d, s)
		}
		out = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("download %s from %s: %w", d, s, err)
	}
	return out, nil
}

// FetchFile downloads object d to dst: into dst+".part" first, resuming a part left by an
// earlier failed attempt, then checked against d and renamed into place, so dst is either
// absent or complete and verified. A part that turns out corrupt is removed and the
// download starts over once.
func FetchFile(ctx context.Context, s Store, d Digest, dst string, perm os.FileMode) error {
	if err := d.Validate(); err != nil {
		return err
	}
	var size int64
	err := retry(ctx, 0, func(ctx context.Context) (err error) {
		size, err = s.Stat(ctx, d)
		return err
	})
	if err != nil {
		return fmt.Errorf("download %s from %s: %w", d, s, err)
	}
	part := dst + ".part"
	for fresh := 0; ; fresh++ {
		err = retry(ctx, size, func(ctx context.Context) error { return fetchPart(ctx, s, d, part, size, perm) })
		if err == nil {
			var got Digest
			got, _, err = HashFile(part)
			if err == nil && got != d {
				err = fmt.Errorf("%w (got %s)", ErrCorrupt, got)
			}
		}
		if err == nil {
			return os.Rename(part, dst)
		}
		os.Remove(part)
		// A corrupt result may come from a stale part resumed: start over once from nothing.
		if !errors.Is(err, ErrCorrupt) || fresh > 0 {
			return fmt.Errorf("download %s from %s: %w", d, s, err)
		}
	}
}

// fetchPart appends the rest of object d to part, which ends up size bytes long.
func fetchPart(ctx context.Context, s Store, d Digest, part string, size int64, perm os.FileMode) error {
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if off > size {
		return fmt.Errorf("%w: partial download longer than the object", ErrCorrupt)
	}
	if off < size {
		rc, err := s.Open(ctx, d, off)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(f, io.LimitReader(rc, size-off))
		if err != nil {
			return err
		}
		if off+n != size {
			return fmt.Errorf("download %s: %d of %d bytes", d, off+n, size)
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
