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

// RegisterKey stores a key (hashed) in a team if it is not stored yet. A key stored in
// another team is an error: a key belongs to one team for good.
func RegisterKey(ctx context.Context, st store.Store, key, name, teamID string) error {
	if !ValidKey(key) {
		return fmt.Errorf("API key must be \"e2b_\" followed by hex digits (the E2B SDKs reject other shapes)")
	}
	k := keyRecord(key, name, teamID)
	err := st.CreateAPIKey(ctx, k)
	if errors.Is(err, store.ErrConflict) {
		have, herr := st.APIKeyByHash(ctx, k.Hash)
		if herr == nil && have.TeamID != teamID {
			return fmt.Errorf("API key %s belongs to team %s, not %s", have.Mask, have.TeamID, teamID)
		}
		return herr
	}
	return err
}

// keyRecord is what the store keeps of a key: its hash and a mask for display.
func keyRecord(key, name, teamID string) store.APIKey {
	h := HashKey(key)
	return store.APIKey{ID: h[:16], TeamID: teamID, Name: name, Hash: h, Mask: key[:6] + "…" + key[len(key)-4:],
		CreatedAt: time.Now().UTC()}
}

// keyCacheTTL is how long a key found valid is trusted without the store. It bounds how
// long a key revoked on another replica keeps working here; the replica that revokes a key
// forgets it at once.
const keyCacheTTL = 2 * time.Second

// keyCache remembers valid keys briefly so that a busy client does not cost a store round
// trip (and a last-used write) per request.
type keyCache struct {
	st   store.Store
	mu   sync.Mutex
	seen map[string]cachedKey // by key hash
	// gen counts revocations; a lookup that raced one does not cache what it read, which
	// may be the revoked key.
	gen uint64
}

type cachedKey struct {
	key  store.APIKey
	seen time.Time
}

func newKeyCache(st store.Store) *keyCache { return &keyCache{st: st, seen: map[string]cachedKey{}} }

// lookup returns the stored key for key, and false if there is none.
func (c *keyCache) lookup(ctx context.Context, key string) (store.APIKey, bool, error) {
	h := HashKey(key)
	c.mu.Lock()
	e, ok := c.seen[h]
	gen := c.gen
	c.mu.Unlock()
	if ok && time.Since(e.seen) < keyCacheTTL {
		return e.key, true, nil
	}
	k, err := c.st.APIKeyByHash(ctx, h)
	if err != nil {
		c.mu.Lock()
		delete(c.seen, h)
		c.mu.Unlock()
		if errors.Is(err, store.ErrNotFound) {
			return store.APIKey{}, false, nil
		}
		return store.APIKey{}, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return k, true, nil // the key was read before a revocation: use it once, never cache it
	}
	if len(c.seen) >= maxCachedKeys {
		clear(c.seen)
	}
	c.seen[h] = cachedKey{key: k, seen: time.Now()}
	return k, true, nil
}

// maxCachedKeys bounds the cache; valid keys are few, so this is never reached in use.
const maxCachedKeys = 4096

// cached reports whether key was found valid within the TTL, without the store.
func (c *keyCache) cached(key string) bool {
	h := HashKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.seen[h]
	return ok && time.Since(e.seen) < keyCacheTTL
}

// forget drops the key with this ID (revoked here: it must stop working at once).
func (c *keyCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for h, e := range c.seen {
		if e.key.ID == id {
			delete(c.seen, h)
		}
	}
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
		k, ok, err := s.keys.lookup(r.Context(), key)
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
		h(w, r.WithContext(withCaller(r.Context(), k)))
	})
}

type callerKey struct{}

func withCaller(ctx context.Context, k store.APIKey) context.Context {
	return context.WithValue(ctx, callerKey{}, k)
}

// callerOf is the API key a request was authenticated with. Handlers behind requireKey
// always have one; without one (a bug) the team is "", which owns nothing.
func callerOf(ctx context.Context) store.APIKey {
	k, _ := ctx.Value(callerKey{}).(store.APIKey)
	return k
}

// teamOf is the team of the request's API key.
func teamOf(ctx context.Context) string { return callerOf(ctx).TeamID }

// ownSandbox lets a request for /sandboxes/{id}/... through only if the sandbox is the
// caller's team's. Another team's sandbox gets the same 404 as one that does not exist, so
// IDs of other teams' sandboxes cannot be probed. It is the one place the check is made for
// every sandbox route, so a new route cannot forget it.
func (s *Server) ownSandbox(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		team := teamOf(r.Context())
		sb, err := s.store.Sandbox(r.Context(), id)
		switch {
		case err == nil && sb.TeamID == team && team != "":
		case err == nil || errors.Is(err, store.ErrNotFound):
			// A killed sandbox's logs stay readable by its team until they age out.
			if errors.Is(err, store.ErrNotFound) && team != "" && s.events.ownerOf(id) == team {
				break
			}
			fail(w, sandboxErr(id, store.ErrNotFound))
			return
		default:
			fail(w, sandboxErr(id, err))
			return
		}
		h(w, r)
	}
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
