package cp

import (
	"errors"
	"net/http"
	"strings"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// maxKeyName bounds a key's name, which is shown in lists.
const maxKeyName = 200

func keyJSON(k store.APIKey) api.TeamAPIKey {
	return api.TeamAPIKey{ID: k.ID, Name: k.Name, Mask: k.Mask, CreatedAt: k.CreatedAt, LastUsed: k.LastUsedAt}
}

// listKeys lists the caller's team's keys.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	team := teamOf(r.Context())
	if team == "" {
		fail(w, errors.New("list API keys: request has no team"))
		return
	}
	keys, err := s.store.ListAPIKeys(r.Context(), team)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]api.TeamAPIKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyJSON(k))
	}
	writeJSON(w, http.StatusOK, out)
}

// createKey makes a new key in the caller's team.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var body api.NewTeamAPIKey
	if err := decode(r, &body); err != nil {
		fail(w, err)
		return
	}
	body.Name = strings.TrimSpace(body.Name)
	if body.Name == "" || len(body.Name) > maxKeyName {
		writeError(w, http.StatusBadRequest, "name is required: 1 to 200 characters that say what the key is for")
		return
	}
	team := teamOf(r.Context())
	if team == "" {
		fail(w, errors.New("create API key: request has no team"))
		return
	}
	key := NewAPIKey()
	rec := keyRecord(key, body.Name, team)
	if err := s.store.CreateAPIKey(r.Context(), rec); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.CreatedTeamAPIKey{TeamAPIKey: keyJSON(rec), Key: key})
}

// revokeKey deletes one of the caller's team's keys. It stops working on this replica at
// once and on others when their key caches expire (keyCacheTTL).
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	id, team := r.PathValue("id"), teamOf(r.Context())
	keys, err := s.store.ListAPIKeys(r.Context(), team)
	if err != nil || team == "" {
		fail(w, errors.Join(errors.New("revoke API key"), err))
		return
	}
	found := false
	for _, k := range keys {
		found = found || k.ID == id
	}
	if !found {
		writeError(w, http.StatusNotFound, "API key "+id+" not found")
		return
	}
	if err := s.store.DeleteAPIKey(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
		fail(w, err)
		return
	}
	s.keys.forget(id)
	w.WriteHeader(http.StatusNoContent)
}
