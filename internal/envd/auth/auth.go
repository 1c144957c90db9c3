// Package auth checks envd's access token and the signed file URLs the E2B SDKs produce.
//
// When /init sets an access token, every route but /health needs the X-Access-Token header.
// GET and POST /files may instead carry a signature, so that a browser or curl can use a URL
// without the token: signature = "v1_" + base64(sha256("path:operation:username:token[:exp]"))
// with the trailing "=" padding removed, and signature_expiration a Unix time in seconds.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
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

// Errors from VerifySignature; each tells the caller what to fix.
var (
	ErrSignatureMissing = errors.New("missing signature: send the X-Access-Token header or a signed URL")
	ErrSignatureInvalid = errors.New("invalid signature for this path, operation and user")
	ErrSignatureExpired = errors.New("signature expired: sign the URL again")
	ErrExpirationFormat = errors.New("signature_expiration must be a Unix time in seconds")
)

// VerifySignature checks a signed file URL's query values against the token.
func VerifySignature(signature, expiration, path, operation, username, token string, now time.Time) error {
	if signature == "" {
		return ErrSignatureMissing
	}
	var exp int64
	if expiration != "" {
		var err error
		exp, err = strconv.ParseInt(expiration, 10, 64)
		if err != nil {
			return ErrExpirationFormat
		}
	}
	if !TokenMatches(signature, Sign(path, operation, username, token, exp)) {
		return ErrSignatureInvalid
	}
	if exp != 0 && now.Unix() > exp {
		return ErrSignatureExpired
	}
	return nil
}
