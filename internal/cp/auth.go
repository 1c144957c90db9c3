package cp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hearthsh/hearth/internal/store"
)

var errEOF = io.EOF

// keyRE is the E2B key shape; the SDK rejects other shapes before sending.
var keyRE = regexp.MustCompile(`^e2b_[0-9a-f]{8,}$`)

// NewAPIKey returns a fresh key in E2B's form: "e2b_" and 40 hex digits.
func NewAPIKey() string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "e2b_" + hex.EncodeToString(b)
}

// ValidKey reports whether a key has E2B's shape.
func ValidKey(k string) bool { return keyRE.MatchString(k) }

// HashKey is what the store keeps of a key.
func HashKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:])
}

// RegisterKey stores a key (hashed) if it is not stored yet.
func RegisterKey(ctx context.Context, st store.Store, key, name string) error {
	if !ValidKey(key) {
		return fmt.Errorf("API key must be \"e2b_\" followed by hex digits (the E2B SDKs reject other shapes)")
	}
	mask := key[:6] + "…" + key[len(key)-4:]
	err := st.CreateAPIKey(ctx, store.APIKey{ID: HashKey(key)[:16], Name: name, Hash: HashKey(key), Mask: mask, CreatedAt: time.Now().UTC()})
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// keyCache remembers valid keys for a minute so that a busy client does not cost a store
// round trip (and a last-used write) per request.
type keyCache struct {
	st   store.Store
	mu   sync.Mutex
	seen map[string]time.Time
}

func newKeyCache(st store.Store) *keyCache { return &keyCache{st: st, seen: map[string]time.Time{}} }

func (c *keyCache) valid(ctx context.Context, key string) (bool, error) {
	h := HashKey(key)
	c.mu.Lock()
	t, ok := c.seen[h]
	c.mu.Unlock()
	if ok && time.Since(t) < time.Minute {
		return true, nil
	}
	if _, err := c.st.APIKeyByHash(ctx, h); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	c.mu.Lock()
	c.seen[h] = time.Now()
	c.mu.Unlock()
	return true, nil
}

// cached reports whether key was found valid within the last minute, without the store.
func (c *keyCache) cached(key string) bool {
	h := HashKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[h]
	return ok && time.Since(t) < time.Minute
}

// Invalid API keys are limited per source address: a bucket of failBurst attempts refilled
// one per failEvery. At most maxFailSources addresses are tracked.
const (
	failBurst      = 10
	failEvery      = 2 * time.Second
	maxFailSources = 4096
)

// failLimiter rate-limits invalid API keys by source address. Its map is bounded: when full,
// the addresses whose buckets have refilled are forgotten, and if none have, all are (an
// attacker with thousands of addresses can reset the buckets, never grow the map).
type failLimiter struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newFailLimiter() *failLimiter { return &failLimiter{m: map[string]*rate.Limiter{}} }

// blocked reports whether src has no invalid attempts left.
func (l *failLimiter) blocked(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[src]
	return ok && lim.Tokens() < 1
}

// fail records an invalid attempt from src and reports whether it was within the limit.
func (l *failLimiter) fail(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[src]
	if !ok {
		if len(l.m) >= maxFailSources {
			for k, v := range l.m {
				if v.Tokens() >= failBurst {
					delete(l.m, k)
				}
			}
			if len(l.m) >= maxFailSources {
				clear(l.m)
			}
		}
		lim = rate.NewLimiter(rate.Every(failEvery), failBurst)
		l.m[src] = lim
	}
	return lim.Allow()
}

// sourceOf is the address a request came from: the connection's peer, never a header a
// client can set.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// requireKey authenticates X-API-Key. A source that sent too many invalid keys gets 429
// until its bucket refills; keys seen valid within the last minute still pass from it, so a
// client sharing an address with a guesser is not locked out.
func (s *Server) requireKey(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		if key == "" {
			writeError(w, http.StatusUnauthorized, "missing API key: send it in the X-API-Key header")
			return
		}
		src := sourceOf(r)
		if s.failures.blocked(src) && !s.keys.cached(key) {
			tooManyFailures(w)
			return
		}
		ok, err := s.keys.valid(r.Context(), key)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "check API key: "+err.Error())
			return
		}
		if !ok {
			if !s.failures.fail(src) {
				s.log.Warn("invalid API keys from one source: rate-limited", "source", src)
				tooManyFailures(w)
				return
			}
			writeError(w, http.StatusUnauthorized, "invalid API key")
			return
		}
		h(w, r)
	})
}

func tooManyFailures(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(failEvery/time.Second)))
	writeError(w, http.StatusTooManyRequests, "too many invalid API keys from this address: retry later with a valid key")
}

// randomToken returns a random hex token for envd access and traffic.
func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// newSandboxID returns an ID in E2B's form: 20 characters of [a-z0-9].
func newSandboxID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
