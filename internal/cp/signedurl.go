package cp

// Signed file URLs that name no sandbox.
//
// For a secure sandbox, the JS SDK's downloadUrl and uploadUrl are
// E2B_SANDBOX_URL/files?path=…&signature=…[&signature_expiration=…] when E2B_SANDBOX_URL
// is set: no sandbox in the host and no routing header. The signature is
// "v1_" + base64(sha256("path:operation:user:token[:expiration]")) over the sandbox's envd
// access token (internal/envd/auth), so it does name its sandbox, to whoever knows every
// sandbox's token: the control plane does. The proxy hashes the request's fields with each
// secure sandbox's token and routes to the one that matches; envd then checks the
// signature again and enforces what it grants. Hearth makes every sandbox secure (as E2B
// does today); a URL without a signature, as E2B's SDKs build for a sandbox without a
// token, must name the sandbox in the host (49983-ID.<domain>) or a header.
//
// The lookup is linear in secure sandboxes (0.2 to 0.6 µs per sandbox: see
// BenchmarkSignedLookup). What bounds it:
//   - the candidate list is a snapshot of the store, refreshed at most once a second however
//     many requests miss, so bad signatures cannot turn into store load;
//   - it holds at most maxSignedCandidates sandboxes;
//   - at most GOMAXPROCS lookups hash at once; the others wait, within their request;
//   - a signature no sandbox made waits for the next refresh (up to a second) to say so.
//
// Every candidate is hashed and compared in constant time, and the match is recorded
// without a branch, so how long a lookup takes depends on the number of sandboxes only,
// never on which one matched. Answers carry no sandbox ID.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/store"
)

const (
	// signedIndexMaxAge is how old a snapshot may be for a lookup that finds its sandbox in it:
	// a stale hit is harmless (resolveProxy reads the sandbox's state from the store).
	signedIndexMaxAge = 30 * time.Second
	// signedIndexMinInterval spaces refreshes: a miss waits for a snapshot taken after it
	// arrived, and all misses of one second share it.
	signedIndexMinInterval = time.Second
	signedIndexLoadTimeout = 15 * time.Second
	// maxSignedCandidates caps the snapshot; beyond it, signed URLs of the sandboxes left out
	// need host routing.
	maxSignedCandidates = 20000
	// e2bDefaultUser is who an SDK URL signed without a user acts as on E2B (and in Hearth's
	// templates); clients other than the SDKs sign that name instead of "".
	e2bDefaultUser = "user"
)

// E2B envd's messages, which the SDKs' own tests match exactly.
var (
	errSignatureInvalid = errorf(http.StatusUnauthorized, "invalid signature")
	errSignatureExpired = errorf(http.StatusUnauthorized, "signature is already expired")
	errUnsignedFiles    = fmt.Errorf("%w. A /files URL without a sandbox is routed by its signature (sbx.downloadUrl and "+
		"sbx.uploadUrl sign theirs), and this one has none: name the sandbox in the host (49983-ID.<domain>, what the SDKs "+
		"build when E2B_SANDBOX_URL is unset) or in the E2b-Sandbox-Id header, and send its X-Access-Token", proxy.ErrNoRoute)
)

type signedEntry struct {
	id    string
	token []byte
}

type signedLoad struct {
	done chan struct{}
	err  error
}

// signedRouter finds the sandbox a signed /files URL was signed for.
type signedRouter struct {
	list func(context.Context) ([]signedEntry, error)
	now  func() time.Time
	// sem bounds the lookups hashing at once.
	sem chan struct{}
	// minInterval spaces loads (signedIndexMinInterval).
	minInterval time.Duration

	mu       sync.Mutex
	entries  []signedEntry
	loadedAt time.Time // when the load that produced entries started; zero before the first
	loading  *signedLoad
	lastLoad time.Time
}

func newSignedRouter(st store.Store, log *slog.Logger) *signedRouter {
	return &signedRouter{
		list:        func(ctx context.Context) ([]signedEntry, error) { return listSecure(ctx, st, log) },
		now:         time.Now,
		sem:         make(chan struct{}, runtime.GOMAXPROCS(0)),
		minInterval: signedIndexMinInterval,
	}
}

// listSecure reads every sandbox with an envd access token from the store.
func listSecure(ctx context.Context, st store.Store, log *slog.Logger) ([]signedEntry, error) {
	var out []signedEntry
	cursor := ""
	for {
		page, next, err := st.ListSandboxes(ctx, store.SandboxFilter{Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("list sandboxes for signed URLs: %w", err)
		}
		for _, sb := range page {
			if sb.EnvdAccessToken == "" {
				continue
			}
			if len(out) == maxSignedCandidates {
				log.Warn("too many sandboxes to look signed file URLs up among: those of the others need host routing (49983-ID.<domain>)", "limit", maxSignedCandidates)
				return out, nil
			}
			out = append(out, signedEntry{id: sb.ID, token: []byte(sb.EnvdAccessToken)})
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// route is proxy.Options.Unrouted: it routes GET and POST /files by their signature.
func (sr *signedRouter) route(r *http.Request) (proxy.Route, error) {
	if r.URL.Path != "/files" {
		return proxy.Route{}, proxy.ErrNoRoute
	}
	arrived := sr.now()
	req, err := parseSignedRequest(r)
	if err != nil {
		return proxy.Route{}, err
	}
	ctx := r.Context()
	// A snapshot up to signedIndexMaxAge old finds sandboxes that have been running a while;
	// a miss looks again in one taken after the request arrived, which has every sandbox
	// created before it.
	id, ok, err := sr.lookup(ctx, req, arrived.Add(-signedIndexMaxAge))
	if err == nil && !ok {
		id, ok, err = sr.lookup(ctx, req, arrived)
	}
	if err != nil {
		return proxy.Route{}, err
	}
	if !ok {
		return proxy.Route{}, errSignatureInvalid
	}
	if req.expiration != 0 && sr.now().Unix() > req.expiration {
		return proxy.Route{}, errSignatureExpired
	}
	return proxy.Route{SandboxID: id, Port: proxy.EnvdPort, Path: r.URL.EscapedPath()}, nil
}

// lookup matches req against a snapshot taken at or after notBefore. Only the hashing holds
// a slot of sem: a lookup waiting for a refresh keeps no one else from hashing.
func (sr *signedRouter) lookup(ctx context.Context, req *signedRequest, notBefore time.Time) (string, bool, error) {
	entries, err := sr.snapshot(ctx, notBefore)
	if err != nil {
		return "", false, err
	}
	select {
	case sr.sem <- struct{}{}:
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
	defer func() { <-sr.sem }()
	id, ok := req.match(entries)
	return id, ok, nil
}

// snapshot returns the candidates from a load that started at or after notBefore, loading
// them (at most once per signedIndexMinInterval, shared by all waiters) when needed.
func (sr *signedRouter) snapshot(ctx context.Context, notBefore time.Time) ([]signedEntry, error) {
	for {
		sr.mu.Lock()
		if !sr.loadedAt.IsZero() && !sr.loadedAt.Before(notBefore) {
			e := sr.entries
			sr.mu.Unlock()
			return e, nil
		}
		l := sr.loading
		if l == nil {
			l = &signedLoad{done: make(chan struct{})}
			sr.loading = l
			go sr.load(l)
		}
		sr.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if l.err != nil {
			return nil, errorf(http.StatusServiceUnavailable, "looking up the sandbox of a signed URL: %v", l.err)
		}
		// That load may have started before notBefore; the loop starts another if so.
	}
}

func (sr *signedRouter) load(l *signedLoad) {
	sr.mu.Lock()
	wait := time.Until(sr.lastLoad.Add(sr.minInterval))
	sr.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	started := sr.now()
	ctx, cancel := context.WithTimeout(context.Background(), signedIndexLoadTimeout)
	entries, err := sr.list(ctx)
	cancel()
	sr.mu.Lock()
	sr.lastLoad = time.Now()
	if err == nil {
		sr.entries, sr.loadedAt = entries, started
	}
	l.err = err
	sr.loading = nil
	sr.mu.Unlock()
	close(l.done)
}

// signedRequest is what a signature covers, parsed once per request.
type signedRequest struct {
	want [sha256.Size]byte
	// prefixes are "path:operation:user:" for each user the URL may be signed for.
	prefixes   [][]byte
	suffix     []byte // ":expiration", or nothing for a URL that does not expire
	expiration int64
	h          hash.Hash
}

// parseSignedRequest reads a /files request's signature fields as envd does
// (auth.CheckFileRequest): 400 for a request that is not a signed URL, 401 for a signature
// that cannot be one.
func parseSignedRequest(r *http.Request) (*signedRequest, error) {
	q := r.URL.Query()
	if q.Get("signature") == "" {
		return nil, errUnsignedFiles
	}
	var op string
	switch r.Method {
	case http.MethodGet:
		op = auth.OpRead
	case http.MethodPost:
		op = auth.OpWrite
	default:
		return nil, errorf(http.StatusBadRequest, "only GET and POST /files accept a signed URL, not %s", r.Method)
	}
	for _, p := range []string{"path", "username", "signature", "signature_expiration"} {
		if len(q[p]) > 1 {
			return nil, errorf(http.StatusBadRequest, "query parameter %s appears %d times in a signed URL", p, len(q[p]))
		}
	}
	req := &signedRequest{h: sha256.New()}
	if s := q.Get("signature_expiration"); s != "" {
		exp, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "signature_expiration must be a Unix time in seconds, not %q", s)
		}
		req.expiration = exp
		if exp != 0 {
			req.suffix = []byte(":" + strconv.FormatInt(exp, 10))
		}
	}
	sig, ok := strings.CutPrefix(q.Get("signature"), "v1_")
	if !ok {
		return nil, errSignatureInvalid
	}
	// The length first: Decode writes as much as the input holds.
	if len(sig) != base64.RawStdEncoding.EncodedLen(sha256.Size) {
		return nil, errSignatureInvalid
	}
	if n, err := base64.RawStdEncoding.Strict().Decode(req.want[:], []byte(sig)); err != nil || n != sha256.Size {
		return nil, errSignatureInvalid
	}
	users := []string{q.Get("username")}
	if users[0] == "" {
		// As auth.CheckFileRequest: the SDKs sign "" (older JS SDKs "undefined"), other
		// clients the default user's name.
		users = []string{"", "undefined", e2bDefaultUser}
	}
	path := q.Get("path")
	for _, u := range users {
		req.prefixes = append(req.prefixes, []byte(path+":"+op+":"+u+":"))
	}
	return req, nil
}

// match returns the sandbox whose token the signature was made with. It hashes every
// candidate with every user whatever matches, and records the match without branching.
func (req *signedRequest) match(entries []signedEntry) (string, bool) {
	var sum [sha256.Size]byte
	found := -1
	for i := range entries {
		for _, p := range req.prefixes {
			req.h.Reset()
			req.h.Write(p)
			req.h.Write(entries[i].token)
			req.h.Write(req.suffix)
			req.h.Sum(sum[:0])
			found = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(sum[:], req.want[:]), i, found)
		}
	}
	if found < 0 {
		return "", false
	}
	return entries[found].id, true
}
