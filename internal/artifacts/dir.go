package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hearthsh/hearth/internal/durable"
)

// Dir is a Store in a local directory: objects at <root>/sha256/<first 2 hex>/<hex>,
// written as temporary files under <root>/tmp and renamed into place, so several agents
// (on one machine, or over NFS) can share one.
type Dir struct {
	root string
}

// NewDir opens (creating) a directory store.
func NewDir(root string) (*Dir, error) {
	for _, sub := range []string{"sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return nil, fmt.Errorf("artifacts dir %s: %w", root, err)
		}
	}
	return &Dir{root: root}, nil
}

func (s *Dir) String() string { return s.root }

func (s *Dir) path(d Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	h := d.Hex()
	return filepath.Join(s.root, "sha256", h[:2], h), nil
}

// Put implements Store: the bytes go to a temporary file, hashed on the way, fsynced, and
// are renamed to the object's name only if they hash to d.
func (s *Dir) Put(ctx context.Context, d Digest, r io.Reader, size int64) error {
	final, err := s.path(d)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Join(s.root, "tmp"), d.Hex()[:16]+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("write %s: %w", d, err)
	}
	if n != size || digestPrefix+hex.EncodeToString(h.Sum(nil)) != string(d) {
		return fmt.Errorf("%w: %s (%d bytes written, %d expected)", ErrCorrupt, d, n, size)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Renaming over an object a concurrent Put of the same digest placed is harmless: same bytes.
	return durable.Rename(tmp.Name(), final)
}

// Open implements Store.
func (s *Dir) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, d, s.root)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return readCloser{ctxReader{ctx, f}, f}, nil
}

// Stat implements Store.
func (s *Dir) Stat(ctx context.Context, d Digest) (int64, error) {
	p, err := s.path(d)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s in %s", ErrNotFound, d, s.root)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Delete implements Store.
func (s *Dir) Delete(ctx context.Context, d Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ctxReader stops a copy once its context ends, so a cancelled pause or resume does not
// finish copying a large file first.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readCloser struct {
	io.Reader
	io.Closer
}
