// Package identity resolves the Linux user an envd request acts as and runs filesystem work
// with that user's permissions.
//
// The E2B SDKs name the user in an HTTP Basic auth header with an empty password; requests
// without one act as the sandbox's default user, which POST /init may change.
package identity

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// User is a resolved Linux account.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, including GID
	Home   string
}

// ErrUnknownUser means the named account does not exist in the sandbox.
var ErrUnknownUser = errors.New("unknown user")

// Lookup resolves a user by name from the sandbox's account database.
func Lookup(name string) (User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return User{}, fmt.Errorf("%w %q", ErrUnknownUser, name)
		}
		return User{}, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q has non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q has non-numeric gid %q", name, u.Gid)
	}
	res := User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	res.Groups = []uint32{res.GID}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(g) != res.GID {
				res.Groups = append(res.Groups, uint32(g))
			}
		}
	}
	if res.Home == "" {
		res.Home = "/"
	}
	return res, nil
}

// Current returns the user envd itself runs as.
func Current() (User, error) {
	u, err := user.Current()
	if err != nil {
		return User{}, fmt.Errorf("current user: %w", err)
	}
	return Lookup(u.Username)
}

// UsernameFromRequest returns the username named by the request's Basic auth header, or "" when
// there is none.
func UsernameFromRequest(h http.Header) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return "", nil
	}
	scheme, payload, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", fmt.Errorf("authorization header must be Basic with the username, got scheme %q", scheme)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", fmt.Errorf("authorization header is not valid base64: %w", err)
	}
	name, _, _ := strings.Cut(string(raw), ":")
	return name, nil
}

// ResolvePath turns a request path into an absolute, clean path: "~" and "~/x" expand to the
// user's home, and relative paths are taken from base (the default workdir, else the home).
func ResolvePath(p string, u User, base string) (string, error) {
	if p == "" {
		return "", errors.New("path is empty")
	}
	if strings.ContainsRune(p, 0) {
		return "", errors.New("path contains a NUL byte")
	}
	switch {
	case p == "~":
		p = u.Home
	case strings.HasPrefix(p, "~/"):
		p = filepath.Join(u.Home, p[2:])
	case !filepath.IsAbs(p):
		if base == "" {
			base = u.Home
		}
		p = filepath.Join(base, p)
	}
	return filepath.Clean(p), nil
}
