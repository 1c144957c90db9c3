package template

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/zstd"
)

// An OCI image base: the build pulls the image's linux/amd64 manifest from its registry,
// keeps each compressed layer in a cache by digest (a rebuild pulls none again), and applies
// the layers in order, whiteouts included, to a fresh root filesystem (oci_layer.go).

// Image names an OCI image and how to pull it.
type Image struct {
	// Ref is the image reference as the user gave it ("debian:12", "127.0.0.1:5000/x/y:1",
	// "…@sha256:…"). Registries on loopback, private and .local addresses are spoken to
	// over plain HTTP, as Docker does.
	Ref string
	// Username and Password, when set, authenticate to the registry (basic auth, or the
	// token exchange the registry asks for).
	Username, Password string
}

// Limits of an image pull, after E2B's (a base rootfs of at most 25 GB).
const (
	// DefaultImageMaxBytes caps both the compressed layers of an image and its unpacked content.
	DefaultImageMaxBytes = 25 << 30
	// DefaultImageMaxEntries caps the files, directories and links of all layers (a Debian
	// image has some 20,000; large toolchain images a few hundred thousand).
	DefaultImageMaxEntries = 5_000_000
	// DefaultImageTimeout bounds the pull and unpack together.
	DefaultImageTimeout = 30 * time.Minute
	imagePlatformOS     = "linux"
	imagePlatformArch   = "amd64"
)

// PullOptions configure PullImage.
type PullOptions struct {
	// CacheDir keeps compressed layers by digest; "" caches nothing.
	CacheDir string
	// CacheMaxBytes, when above 0, is what the cache is cut to after a pull (the pulled
	// image's layers kept): PruneLayerCache.
	CacheMaxBytes int64
	// MaxBytes caps the compressed size of the layers and the unpacked content; 0 means
	// DefaultImageMaxBytes.
	MaxBytes int64
	// MaxEntries caps the entries of all layers; 0 means DefaultImageMaxEntries.
	MaxEntries int
	// Timeout bounds the whole pull; 0 means DefaultImageTimeout.
	Timeout time.Duration
	// Transport is the HTTP transport to the registry; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Log receives progress lines.
	Log func(string)
}

// ImageConfig is what a build takes from the image's configuration.
type ImageConfig struct {
	// Digest is the manifest digest of the linux/amd64 image pulled.
	Digest string
	Env    []string
	// WorkingDir, User, Entrypoint and Cmd are recorded only: E2B's builds do not use them
	// (a build from an image starts as root in no workdir, then as `user`).
	WorkingDir string
	User       string
	Entrypoint []string
	Cmd        []string
}

// ErrImage is wrapped by the errors about an image that cannot be pulled as asked: a bad
// reference, an unknown image, failed authentication, too large an image.
var ErrImage = errors.New("image")

// PullImage pulls img and unpacks it into rootfs, which must not exist yet.
func PullImage(ctx context.Context, img Image, rootfs string, o PullOptions) (ImageConfig, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultImageMaxBytes
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultImageMaxEntries
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultImageTimeout
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cfg, err := pullImage(ctx, img, rootfs, o)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ImageConfig{}, fmt.Errorf("pull %s: timed out after %v: %w", img.Ref, o.Timeout, err)
	}
	return cfg, err
}

func pullImage(ctx context.Context, img Image, rootfs string, o PullOptions) (ImageConfig, error) {
	ref, err := name.ParseReference(img.Ref, name.WeakValidation)
	if err != nil {
		return ImageConfig{}, fmt.Errorf("%w reference %q is not valid: %v", ErrImage, img.Ref, err)
	}
	auth := authn.Anonymous
	if img.Username != "" || img.Password != "" {
		auth = &authn.Basic{Username: img.Username, Password: img.Password}
	}
	o.Log(fmt.Sprintf("Pulling %s (%s/%s)", ref.Name(), imagePlatformOS, imagePlatformArch))
	image, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(o.Transport),
		remote.WithPlatform(v1.Platform{OS: imagePlatformOS, Architecture: imagePlatformArch}),
		remote.WithUserAgent("hearth"))
	if err != nil {
		return ImageConfig{}, registryError(ref, img, err)
	}
	digest, err := image.Digest()
	if err != nil {
		return ImageConfig{}, registryError(ref, img, err)
	}
	cf, err := image.ConfigFile()
	if err != nil {
		return ImageConfig{}, registryError(ref, img, err)
	}
	if cf.OS != "" && cf.OS != imagePlatformOS || cf.Architecture != "" && cf.Architecture != imagePlatformArch {
		return ImageConfig{}, fmt.Errorf("%w %s is for %s/%s: Hearth runs %s/%s images only", ErrImage, ref.Name(), cf.OS, cf.Architecture, imagePlatformOS, imagePlatformArch)
	}
	layers, err := image.Layers()
	if err != nil {
		return ImageConfig{}, registryError(ref, img, err)
	}
	var total int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return ImageConfig{}, registryError(ref, img, err)
		}
		if total += n; n < 0 || total > o.MaxBytes {
			return ImageConfig{}, fmt.Errorf("%w %s is over the limit of %d MiB of layers", ErrImage, ref.Name(), o.MaxBytes>>20)
		}
	}
	w, err := newLayerWriter(rootfs, o.MaxBytes, o.MaxEntries)
	if err != nil {
		return ImageConfig{}, err
	}
	defer w.Close()
	for i, l := range layers {
		if err := applyImageLayer(ctx, w, l, i, len(layers), ref, img, o); err != nil {
			return ImageConfig{}, err
		}
	}
	if w.skipped > 0 {
		o.Log(fmt.Sprintf("Left out %d device nodes and FIFOs: a sandbox has its own /dev", w.skipped))
	}
	if o.CacheDir != "" && o.CacheMaxBytes > 0 {
		keep := map[string]bool{}
		for _, l := range layers {
			if d, err := l.Digest(); err == nil {
				keep[d.String()] = true
			}
		}
		// The template is built by now: a failed prune costs disk, not the build.
		if n, freed, err := PruneLayerCache(o.CacheDir, o.CacheMaxBytes, keep); err != nil {
			o.Log("Layer cache: " + err.Error())
		} else if n > 0 {
			o.Log(fmt.Sprintf("Layer cache: removed %d least recently used layers (%d MiB) to stay under %d MiB", n, freed>>20, o.CacheMaxBytes>>20))
		}
	}
	c := cf.Config
	return ImageConfig{Digest: digest.String(), Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd}, nil
}

// applyImageLayer fetches layer i (from the cache when it has it) and applies it.
func applyImageLayer(ctx context.Context, w *layerWriter, l v1.Layer, i, n int, ref name.Reference, img Image, o PullOptions) error {
	d, err := l.Digest()
	if err != nil {
		return registryError(ref, img, err)
	}
	size, _ := l.Size()
	short := d.Hex
	if len(short) > 12 {
		short = short[:12]
	}
	var rc io.ReadCloser
	if o.CacheDir != "" {
		p, cached, err := cacheLayer(ctx, l, d, size, o.CacheDir)
		if err != nil {
			return registryError(ref, img, fmt.Errorf("layer %s: %w", d, err))
		}
		rc, err = openCachedLayer(p)
		if errors.Is(err, fs.ErrNotExist) {
			// A prune (another build's, maybe in another process) removed it after the
			// check: fetch it once more.
			if p, cached, err = cacheLayer(ctx, l, d, size, o.CacheDir); err != nil {
				return registryError(ref, img, fmt.Errorf("layer %s: %w", d, err))
			}
			rc, err = openCachedLayer(p)
		}
		if err != nil {
			return fmt.Errorf("open cached layer %s: %w", d, err)
		}
		if cached {
			touchLayer(p)
			o.Log(fmt.Sprintf("Layer %d/%d %s: cached", i+1, n, short))
		} else {
			o.Log(fmt.Sprintf("Layer %d/%d %s: pulled %d MiB", i+1, n, short, size>>20))
		}
	} else {
		o.Log(fmt.Sprintf("Layer %d/%d %s: pulling %d MiB", i+1, n, short, size>>20))
		if rc, err = l.Uncompressed(); err != nil {
			return registryError(ref, img, fmt.Errorf("layer %s: %w", d, err))
		}
	}
	defer rc.Close()
	if err := w.apply(ctx, rc); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("unpack layer %s: %w", d, ctx.Err())
		}
		return fmt.Errorf("unpack layer %d/%d (%s) of %s: %w", i+1, n, d, img.Ref, err)
	}
	return nil
}

// cacheLayer makes sure the compressed layer d is in dir and returns its path there, and
// whether it was there already. The download goes to a temp file renamed into place only
// once the whole blob arrived and matched its digest (remote layers verify as they are
// read), so the cache never holds a partial or wrong layer.
func cacheLayer(ctx context.Context, l v1.Layer, d v1.Hash, size int64, dir string) (string, bool, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 || strings.ContainsAny(d.Hex, "/.") {
		return "", false, fmt.Errorf("unsupported digest %s", d)
	}
	p := filepath.Join(dir, d.Algorithm+"-"+d.Hex)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && (size <= 0 || fi.Size() == size) {
		return p, true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return "", false, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, ".pull-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	// A registry that sends more than the manifest said is cut off (and fails verification).
	_, err = io.Copy(tmp, &ctxReader{ctx: ctx, r: io.LimitReader(rc, size+1)})
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", false, err
	}
	return p, false, nil
}

// openCachedLayer returns the uncompressed stream of the cached layer blob at p: gzip,
// zstd or a plain tar, told apart by their magic numbers as the media types may lie. (The
// blob's digest was checked when it was cached.)
func openCachedLayer(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return readCloser{zr, f.Close}, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
	default:
		return readCloser{br, f.Close}, nil
	}
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// registryError turns what go-containerregistry reports into a build error that says what
// went wrong in the user's terms.
func registryError(ref name.Reference, img Image, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range te.Errors {
			codes[d.Code] = true
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			if img.Username == "" {
				return fmt.Errorf("%w %s: the registry %s refused an anonymous pull (give credentials: fromImage(ref, {username, password})): %v", ErrImage, ref.Name(), ref.Context().RegistryStr(), err)
			}
			return fmt.Errorf("%w %s: authentication to registry %s as %q failed: %v", ErrImage, ref.Name(), ref.Context().RegistryStr(), img.Username, err)
		case te.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] || codes[transport.NameUnknownErrorCode]:
			return fmt.Errorf("%w %s not found in registry %s: %v", ErrImage, ref.Name(), ref.Context().RegistryStr(), err)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pull %s: %w", ref.Name(), err)
	}
	return fmt.Errorf("pull %s from registry %s: %w", ref.Name(), ref.Context().RegistryStr(), err)
}
