package agent

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/hostreg"
)

// RequireControlPlane admits to the hostagent.v1 handler h only requests that carry the agent
// token as "Authorization: Bearer"; others get Connect's unauthenticated (HTTP 401) before
// h sees them. An empty token admits nothing.
func RequireControlPlane(token string, h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostreg.BearerMatches(r.Header.Get("Authorization"), token) {
			_ = ew.Write(w, r, connect.NewError(connect.CodeUnauthenticated,
				errors.New("the host agent API takes only the control plane's calls: send the agent token as Authorization: Bearer")))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// RequireControlPlaneProxy admits to the sandbox proxy h only requests that carry the agent
// token in hostreg.ProxyAuthHeader, and removes that header so it never reaches a sandbox.
// Others get 401 before any sandbox is looked up.
func RequireControlPlaneProxy(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(hostreg.ProxyAuthHeader)
		if token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusUnauthorized,
				"message": "the host agent's proxy takes only the control plane's traffic: send the agent token in " + hostreg.ProxyAuthHeader})
			return
		}
		r.Header.Del(hostreg.ProxyAuthHeader)
		h.ServeHTTP(w, r)
	})
}
