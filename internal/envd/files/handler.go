// Package files serves envd's GET and POST /files: download and upload of whole files, on
// behalf of the request's user, in the shape E2B's envd uses so the E2B SDKs' files.read and
// files.write work unchanged.
//
// Downloads stream from disk; uploads stream into a temporary file next to the destination
// that is renamed over it only when the upload is complete, so readers never see a partial
// file and a failed upload leaves nothing behind.
package files

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/hearthsh/hearth/internal/envd/auth"
	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
)

// Handler serves /files.
type Handler struct {
	env    *sandboxenv.Env
	logger *slog.Logger
}

// New returns the /files handler. Mount it at exactly "/files". It checks the access token or
// the URL's signature itself, so it is safe behind a router that lets /files through.
func New(env *sandboxenv.Env, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{env: env, logger: logger}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.download(w, r)
	case http.MethodPost:
		h.upload(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on /files: use GET to download or POST to upload", r.Method))
	}
}

// access resolves who the request acts as and what it may do. A request with the access token
// (or to an envd without one) acts as the Basic auth username, else the username query
// parameter, else the sandbox's default user. A signed URL acts as the user it is signed for
// and no one else: a Basic auth header naming anyone else is 401.
func (h *Handler) access(r *http.Request) (identity.User, auth.FileGrant, *httpError) {
	g, err := auth.CheckFileRequest(r.Method, r.Header, r.URL.Query(), h.env.AccessToken(), h.env.DefaultUser(), time.Now())
	if err != nil {
		return identity.User{}, g, &httpError{http.StatusUnauthorized, err}
	}
	name, err := identity.UsernameFromRequest(r.Header)
	if err != nil {
		return identity.User{}, g, &httpError{http.StatusUnauthorized, err}
	}
	switch {
	case g.Signed:
		signed := g.User
		if signed == "" {
			signed = h.env.DefaultUser()
		}
		if name != "" && name != signed {
			return identity.User{}, g, &httpError{http.StatusUnauthorized, fmt.Errorf(
				"the Authorization header names user %q but the URL is signed for user %q: drop the header or sign the URL for %q", name, signed, name)}
		}
		name = signed
	case name == "":
		name = r.URL.Query().Get("username")
	}
	u, err := h.env.UserFor(name)
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return identity.User{}, g, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: name an existing sandbox user", err)}
		}
		return identity.User{}, g, &httpError{http.StatusInternalServerError, err}
	}
	return u, g, nil
}

// resolve makes a request path absolute for u.
func (h *Handler) resolve(p string, u identity.User) (string, *httpError) {
	abs, err := identity.ResolvePath(p, u, h.env.DefaultWorkdir())
	if err != nil {
		return "", &httpError{http.StatusBadRequest, fmt.Errorf("invalid path %q: %w", p, err)}
	}
	return abs, nil
}

// httpError is a failure with the status it answers with.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }

// errorBody is E2B's error shape, which the SDKs read the message from.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Disposition")
	w.Header().Del("Content-Encoding")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Code: status, Message: err.Error()})
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, e *httpError) {
	level := slog.LevelInfo
	if e.status >= 500 {
		level = slog.LevelError
	}
	h.logger.Log(r.Context(), level, "files request failed", "method", r.Method, "path", r.URL.Query().Get("path"), "status", e.status, "err", e.err)
	writeError(w, e.status, e.err)
}
