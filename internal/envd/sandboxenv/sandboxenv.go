// Package sandboxenv holds what POST /init configures in envd: environment variables for new
// processes, the access token, and the default user and working directory.
//
// The control plane calls /init after every create and resume, so every field can change
// while envd runs; readers take a snapshot under a lock.
package sandboxenv

import (
	"maps"
	"sync"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// Env is safe for concurrent use.
type Env struct {
	mu          sync.RWMutex
	vars        map[string]string
	accessToken string
	user        string
	workdir     string
}

// New returns an Env whose default user is user.
func New(user string) *Env {
	return &Env{vars: map[string]string{}, user: user}
}

// Vars returns a copy of the environment variables set by /init.
func (e *Env) Vars() map[string]string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return maps.Clone(e.vars)
}

// MergeVars adds or replaces environment variables.
func (e *Env) MergeVars(vars map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	maps.Copy(e.vars, vars)
}

// AccessToken returns the token every request but /health must carry, or "" for none.
func (e *Env) AccessToken() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.accessToken
}

// SetAccessToken replaces the access token.
func (e *Env) SetAccessToken(t string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.accessToken = t
}

// DefaultUser is the user for requests that name none.
func (e *Env) DefaultUser() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.user
}

// SetDefaultUser changes the default user.
func (e *Env) SetDefaultUser(u string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.user = u
}

// DefaultWorkdir is the working directory for processes and relative paths, "" for the user's
// home.
func (e *Env) DefaultWorkdir() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.workdir
}

// SetDefaultWorkdir changes the default working directory.
func (e *Env) SetDefaultWorkdir(dir string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workdir = dir
}

// UserFor resolves the user a request acts as: the one it names, else the default user.
func (e *Env) UserFor(name string) (identity.User, error) {
	if name == "" {
		name = e.DefaultUser()
	}
	return identity.Lookup(name)
}
