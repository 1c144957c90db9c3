// Package auth checks envd's access token and the signed file URLs the E2B SDKs produce.
//
// When /init sets an access token, every route but /health needs the X-Access-Token header.
// GET and POST /files may instead carry a signature, so that a browser or curl can use a URL
// without the token: signature = "v1_" + base64(sha256("path:operation:username:token[:exp]"))
// with the trailing "=" padding removed, and signature_expiration a Unix time in seconds.
//
// A signature grants one operation on one path as one user, nothing more: CheckFileRequest
// reports that grant, and the /files handler acts within it.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Header carries the access token on every request.
const Header = "X-Access-Token"

// AgentHeader carries the agent's secret to envd's internal routes (/init, /freeze,
// /thaw). The secret is per sandbox and never leaves the host agent: the control plane,
// the SDKs and the proxies never see it, so no client outside the sandbox can present it.
const AgentHeader = "X-Hearth-Agent-Secret"

// MinAgentSecret is the shortest agent secret envd accepts (the agent sends 64 hex digits).
const MinAgentSecret = 32

// Operations a file signature covers.
const (
	OpRead  = "read"
	OpWrite = "write"
)

// TokenMatches compares a presented token with the expected one in constant time.
func TokenMatches(presented, expected string) bool {
	return subtle.ConstantTimeCompare([]byte(presented), []byte(expected)) == 1
}

// Sign computes the signature for a file operation. expiration is a Unix time in seconds, or
// 0 for a signature that never expires.
func Sign(path, operation, username, token string, expiration int64) string {
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != 0 {
		raw += ":" + strconv.FormatInt(expiration, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

// Errors from CheckFileRequest. The first words of the signature errors are E2B envd's, which
// clients may match on.
var (
	ErrTokenInvalid      = errors.New("invalid access token in " + Header)
	ErrSignatureMissing  = errors.New("missing signature query parameter: send the " + Header + " header or a signed URL")
	ErrSignatureInvalid  = errors.New("invalid signature: the URL is not signed for this path, operation and user")
	ErrSignatureExpired  = errors.New("signature is already expired: sign the URL again")
	ErrExpirationFormat  = errors.New("signature_expiration must be a Unix time in seconds")
	ErrRepeatedParameter = errors.New("repeated query parameter in a signed URL")
	ErrMethodNotSignable = errors.New("only GET and POST /files accept a signed URL")
)

// FileGrant is what a request to /files is authorised to do.
type FileGrant struct {
	// Signed is set when a signed URL, not the access token, authorised the request; the
	// other fields then bound it. Without Signed the caller holds the token (or none is set)
	// and may act as anyone.
	Signed bool
	// User is the user the URL is signed for; "" means the sandbox's default user.
	User string
	// Path is the signed path exactly as sent; "" when the URL was signed without one.
	Path string
	// Op is OpRead or OpWrite.
	Op string
}

// signedParams are the query parameters a signature covers or carries; each may appear once,
// so that what was verified is what the handler reads.
var signedParams = []string{"path", "username", "signature", "signature_expiration"}

// CheckFileRequest authorises a request to /files. With no token set anything goes; with the
// token in the header the caller is trusted; otherwise the URL must be signed for its path,
// the method's operation and its username (absent: the default user), and be unexpired.
func CheckFileRequest(method string, h http.Header, q url.Values, token, defaultUser string, now time.Time) (FileGrant, error) {
	if token == "" {
		return FileGrant{}, nil
	}
	if presented := h.Get(Header); presented != "" {
		if TokenMatches(presented, token) {
			return FileGrant{}, nil
		}
		return FileGrant{}, ErrTokenInvalid
	}
	var op string
	switch method {
	case http.MethodGet:
		op = OpRead
	case http.MethodPost:
		op = OpWrite
	default:
		return FileGrant{}, ErrMethodNotSignable
	}
	for _, p := range signedParams {
		if len(q[p]) > 1 {
			return FileGrant{}, fmt.Errorf("%w: %s appears %d times", ErrRepeatedParameter, p, len(q[p]))
		}
	}
	g := FileGrant{Signed: true, Path: q.Get("path"), Op: op}
	sig := q.Get("signature")
	if sig == "" {
		return FileGrant{}, ErrSignatureMissing
	}
	var exp int64
	if s := q.Get("signature_expiration"); s != "" {
		var err error
		if exp, err = strconv.ParseInt(s, 10, 64); err != nil {
			return FileGrant{}, ErrExpirationFormat
		}
	}
	// Which user strings the signature may name, and who each one acts as.
	type candidate struct{ signed, actsAs string }
	candidates := []candidate{{q.Get("username"), q.Get("username")}}
	if !q.Has("username") || q.Get("username") == "" {
		// A URL signed without a user: SDKs sign "" (older JS SDKs rendered it as
		// "undefined"), meaning the default user of the moment; other clients sign the
		// default user by name, which then stays the user even if /init changes the default.
		candidates = []candidate{{"", ""}, {"undefined", ""}, {defaultUser, defaultUser}}
	}
	matched := false
	for _, c := range candidates {
		// Compare against every candidate, so timing does not tell which one matched.
		if TokenMatches(sig, Sign(g.Path, op, c.signed, token, exp)) && !matched {
			matched, g.User = true, c.actsAs
		}
	}
	if !matched {
		return FileGrant{}, ErrSignatureInvalid
	}
	if exp != 0 && now.Unix() > exp {
		return FileGrant{}, ErrSignatureExpired
	}
	return g, nil
}
