package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config names a bucket and where objects go in it.
type S3Config struct {
	// Endpoint is host:port of the S3 API; Secure says HTTPS. Empty is AWS
	// (s3.amazonaws.com).
	Endpoint string
	Secure   bool
	Region   string
	Bucket   string
	// Prefix is prepended to every object key (no leading or trailing slash).
	Prefix string
	// PartSize is the multipart upload's part size; 0 is minio-go's default (16 MiB, and
	// objects below it are one PUT).
	PartSize uint64
	// Creds default to the standard AWS environment variables (AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
	Creds *credentials.Credentials
	// Transport, when set, carries the requests (tests).
	Transport http.RoundTripper
}

// ParseS3URL reads s3://bucket/prefix?endpoint=http://host:9000&region=r.
func ParseS3URL(spec string) (S3Config, error) {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return S3Config{}, fmt.Errorf("artifacts %q: want s3://bucket/prefix?endpoint=...&region=...", spec)
	}
	cfg := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Region: u.Query().Get("region"), Endpoint: "s3.amazonaws.com", Secure: true}
	if ep := u.Query().Get("endpoint"); ep != "" {
		e, err := url.Parse(ep)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return S3Config{}, fmt.Errorf("artifacts %q: endpoint %q: want http(s)://host[:port]", spec, ep)
		}
		cfg.Endpoint, cfg.Secure = e.Host, e.Scheme == "https"
	}
	for k := range u.Query() {
		if k != "endpoint" && k != "region" {
			return S3Config{}, fmt.Errorf("artifacts %q: unknown parameter %q (want endpoint, region)", spec, k)
		}
	}
	return cfg, nil
}

// S3 is a Store in an S3-compatible bucket: objects at <prefix>/sha256/<hex>.
type S3 struct {
	cfg S3Config
	c   *minio.Client
	log *slog.Logger
}

// NewS3 returns a store for cfg. It does not contact the server.
func NewS3(cfg S3Config, log *slog.Logger) (*S3, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Creds == nil {
		cfg.Creds = credentials.NewEnvAWS()
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds: cfg.Creds, Secure: cfg.Secure, Region: cfg.Region, Transport: cfg.Transport,
		// Retries are ours (retry), bounded per attempt.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("artifacts s3://%s: %w", cfg.Bucket, err)
	}
	return &S3{cfg: cfg, c: c, log: log}, nil
}

func (s *S3) String() string {
	return "s3://" + path.Join(s.cfg.Bucket, s.cfg.Prefix) + " at " + s.cfg.Endpoint
}

func (s *S3) key(d Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	return path.Join(s.cfg.Prefix, "sha256", d.Hex()), nil
}

// Put implements Store. Each part carries its Content-MD5, which the server checks, and
// the object appears only when the upload completes. The bytes sent are hashed on the way:
// if they do not hash to d (the source changed underneath), the object is removed again and
// the put fails; readers check the digest of whatever they download in any case.
func (s *S3) Put(ctx context.Context, d Digest, r io.Reader, size int64) error {
	key, err := s.key(d)
	if err != nil {
		return err
	}
	h := sha256.New()
	// DisableContentSha256: without it minio-go signs plain-HTTP uploads as aws-chunked
	// streams, which not every S3-compatible server takes for parts; Content-MD5 guards
	// each part's bytes instead, and the digest the bytes sent are checked against below.
	info, err := s.c.PutObject(ctx, s.cfg.Bucket, key, hashingReader{r, h}, size, minio.PutObjectOptions{
		SendContentMd5: true, DisableContentSha256: true, PartSize: s.cfg.PartSize, ContentType: "application/octet-stream",
		UserMetadata: map[string]string{"sha256": d.Hex()},
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if digestPrefix+hex.EncodeToString(h.Sum(nil)) != string(d) || info.Size != size {
		if rerr := s.c.RemoveObject(context.WithoutCancel(ctx), s.cfg.Bucket, key, minio.RemoveObjectOptions{}); rerr != nil {
			s.log.Warn("remove mismatching upload", "key", key, "err", rerr)
		}
		return fmt.Errorf("%w: %s (%d bytes uploaded, %d expected)", ErrCorrupt, d, info.Size, size)
	}
	return nil
}

type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// Open implements Store, with a range request from offset.
func (s *S3) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error) {
	key, err := s.key(d)
	if err != nil {
		return nil, err
	}
	opts := minio.GetObjectOptions{}
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, err
		}
	}
	obj, err := s.c.GetObject(ctx, s.cfg.Bucket, key, opts)
	if err != nil {
		return nil, s.mapErr(key, err)
	}
	// GetObject is lazy: Stat makes the request, so a missing object fails here.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.mapErr(key, err)
	}
	return obj, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, d Digest) (int64, error) {
	key, err := s.key(d)
	if err != nil {
		return 0, err
	}
	info, err := s.c.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return 0, s.mapErr(key, err)
	}
	return info.Size, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, d Digest) error {
	key, err := s.key(d)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return s.mapErr(key, err)
	}
	return nil
}

func (s *S3) mapErr(key string, err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code == minio.NoSuchKey || resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket {
		return fmt.Errorf("%w: %s in %s", ErrNotFound, key, s)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s: %w", key, err)
}
