package auth

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

const testToken = "secret-token"

var now = time.Unix(1_700_000_000, 0)

// signedQuery is a query signed the way the JS SDK's downloadUrl/uploadUrl sign one: the user
// is in the signature and, when set, in username.
func signedQuery(path, op, user string, exp int64) url.Values {
	q := url.Values{"signature": {Sign(path, op, user, testToken, exp)}}
	if path != "" {
		q.Set("path", path)
	}
	if user != "" {
		q.Set("username", user)
	}
	if exp != 0 {
		q.Set("signature_expiration", strconv.FormatInt(exp, 10))
	}
	return q
}

func TestCheckFileRequest(t *testing.T) {
	future, past := now.Add(time.Hour).Unix(), now.Add(-time.Hour).Unix()
	withParam := func(q url.Values, k, v string) url.Values { q.Add(k, v); return q }
	tests := []struct {
		name   string
		method string
		header http.Header
		query  url.Values
		token  string
		want   FileGrant
		err    error
	}{
		{name: "no token set", method: "GET", query: url.Values{"path": {"/etc/shadow"}}, want: FileGrant{}},
		{name: "token in header", method: "GET", header: http.Header{Header: {testToken}}, token: testToken, want: FileGrant{}},
		{name: "wrong token in header", method: "GET", header: http.Header{Header: {"nope"}}, token: testToken, err: ErrTokenInvalid},
		{name: "signed for a user", method: "GET", query: signedQuery("/etc/shadow", OpRead, "nobody", 0), token: testToken,
			want: FileGrant{Signed: true, User: "nobody", Path: "/etc/shadow", Op: OpRead}},
		{name: "signed without a user acts as the default", method: "POST", query: signedQuery("/tmp/x", OpWrite, "", future), token: testToken,
			want: FileGrant{Signed: true, User: "", Path: "/tmp/x", Op: OpWrite}},
		{name: "old JS SDK signed undefined", method: "GET", query: url.Values{"path": {"a"}, "signature": {Sign("a", OpRead, "undefined", testToken, 0)}}, token: testToken,
			want: FileGrant{Signed: true, Path: "a", Op: OpRead}},
		{name: "signed for the default user by name stays that user", method: "GET", query: url.Values{"path": {"a"}, "signature": {Sign("a", OpRead, "user", testToken, 0)}}, token: testToken,
			want: FileGrant{Signed: true, User: "user", Path: "a", Op: OpRead}},
		{name: "upload signed without a path", method: "POST", query: signedQuery("", OpWrite, "user", 0), token: testToken,
			want: FileGrant{Signed: true, User: "user", Op: OpWrite}},
		{name: "signed for another user", method: "GET", query: func() url.Values {
			q := signedQuery("/etc/shadow", OpRead, "nobody", 0)
			q.Set("username", "root")
			return q
		}(), token: testToken, err: ErrSignatureInvalid},
		{name: "signed for another path", method: "GET", query: func() url.Values {
			q := signedQuery("/tmp/x", OpRead, "", 0)
			q.Set("path", "/etc/shadow")
			return q
		}(), token: testToken, err: ErrSignatureInvalid},
		{name: "signed for reading, used to write", method: "POST", query: signedQuery("/tmp/x", OpRead, "", 0), token: testToken, err: ErrSignatureInvalid},
		{name: "expired", method: "GET", query: signedQuery("/tmp/x", OpRead, "", past), token: testToken, err: ErrSignatureExpired},
		{name: "expired without a user", method: "GET", query: signedQuery("/tmp/x", OpRead, "nobody", past), token: testToken, err: ErrSignatureExpired},
		{name: "expiration removed", method: "GET", query: func() url.Values {
			q := signedQuery("/tmp/x", OpRead, "", future)
			q.Del("signature_expiration")
			return q
		}(), token: testToken, err: ErrSignatureInvalid},
		{name: "expiration not a number", method: "GET", query: withParam(url.Values{"signature": {"v1_x"}}, "signature_expiration", "soon"), token: testToken, err: ErrExpirationFormat},
		{name: "no signature", method: "GET", query: url.Values{"path": {"/tmp/x"}}, token: testToken, err: ErrSignatureMissing},
		{name: "repeated path", method: "POST", query: withParam(signedQuery("/tmp/x", OpWrite, "", 0), "path", "/etc/passwd"), token: testToken, err: ErrRepeatedParameter},
		{name: "repeated username", method: "GET", query: withParam(signedQuery("/tmp/x", OpRead, "nobody", 0), "username", "root"), token: testToken, err: ErrRepeatedParameter},
		{name: "HEAD cannot be signed", method: "HEAD", query: signedQuery("/tmp/x", OpRead, "", 0), token: testToken, err: ErrMethodNotSignable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			got, err := CheckFileRequest(tt.method, h, tt.query, tt.token, "user", now)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("grant %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The messages start as E2B envd's do, which clients may match on.
func TestSignatureErrorsMatchE2B(t *testing.T) {
	for err, prefix := range map[error]string{
		ErrSignatureExpired: "signature is already expired",
		ErrSignatureInvalid: "invalid signature",
		ErrSignatureMissing: "missing signature query parameter",
	} {
		if msg := err.Error(); len(msg) < len(prefix) || msg[:len(prefix)] != prefix {
			t.Errorf("%q does not start with %q", msg, prefix)
		}
	}
}

// FuzzCheckFileRequest feeds arbitrary query strings. Whatever it grants must be exactly what
// a signature over the grant's own path, operation and user would allow: a signed grant is
// never wider than what was signed.
func FuzzCheckFileRequest(f *testing.F) {
	f.Add("GET", signedQuery("/etc/shadow", OpRead, "nobody", 0).Encode(), "")
	f.Add("POST", signedQuery("", OpWrite, "", now.Unix()+60).Encode(), "")
	f.Add("POST", signedQuery("/home/user/x", OpWrite, "user", 0).Encode()+"&path=/etc/passwd", "")
	f.Add("GET", "path=%2Fetc%2Fshadow&signature=v1_&signature_expiration=-1", "")
	f.Add("GET", "path=a;b&username=root&signature=v1_x", testToken)
	f.Fuzz(func(t *testing.T, method, rawQuery, header string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		h := http.Header{}
		if header != "" {
			h.Set(Header, header)
		}
		g, err := CheckFileRequest(method, h, q, testToken, "user", now)
		if err != nil {
			return
		}
		if !g.Signed {
			if !TokenMatches(header, testToken) {
				t.Fatalf("unsigned grant without the token: %+v", g)
			}
			return
		}
		if g.Path != q.Get("path") || len(q["path"]) > 1 || len(q["username"]) > 1 {
			t.Fatalf("grant %+v does not match the single path in %q", g, rawQuery)
		}
		if (method == http.MethodGet) != (g.Op == OpRead) || (method == http.MethodPost) != (g.Op == OpWrite) {
			t.Fatalf("grant %+v for method %q", g, method)
		}
		if name := q.Get("username"); name != "" && g.User != name {
			t.Fatalf("grant for user %q from a URL naming %q", g.User, name)
		}
		var exp int64
		if s := q.Get("signature_expiration"); s != "" {
			exp, _ = strconv.ParseInt(s, 10, 64)
			if exp != 0 && exp < now.Unix() {
				t.Fatalf("expired signature granted: %+v", g)
			}
		}
		signedUser := g.User
		ok := TokenMatches(q.Get("signature"), Sign(g.Path, g.Op, signedUser, testToken, exp))
		if !ok && g.User == "" {
			ok = TokenMatches(q.Get("signature"), Sign(g.Path, g.Op, "undefined", testToken, exp))
		}
		if !ok {
			t.Fatalf("grant %+v is not what %q signs", g, q.Get("signature"))
		}
	})
}
