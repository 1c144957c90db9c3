package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/store"
)

// TestTeamAndKeyCommands: an operator makes a team and keys from the CLI, on the control
// plane's database, and revokes one; the store then refuses the revoked key.
func TestTeamAndKeyCommands(t *testing.T) {
	dir := t.TempDir()
	db := []string{"--data-dir", dir}
	args := func(a ...string) []string { return append(a, db...) }

	r := runCLI(t, "", args("team", "create", "acme", "--json")...)
	r.expect(t, 0, `"teamName": "acme"`, "")
	var first createdKey
	if err := json.Unmarshal([]byte(r.stdout), &first); err != nil || !cp.ValidKey(first.Key) {
		t.Fatalf("team create printed %q: %v", r.stdout, err)
	}
	runCLI(t, "", args("team", "create", "acme")...).expect(t, 1, "", `a team named "acme" exists`)
	runCLI(t, "", args("team", "ls")...).expect(t, 0, "acme", "")

	r = runCLI(t, "", args("key", "create", "--team", "acme", "--name", "ci", "--json")...)
	r.expect(t, 0, first.TeamID, "")
	var second createdKey
	if err := json.Unmarshal([]byte(r.stdout), &second); err != nil || second.Key == first.Key {
		t.Fatalf("key create printed %q: %v", r.stdout, err)
	}
	runCLI(t, "", args("key", "create")...).expect(t, 1, "", "--team is required")
	runCLI(t, "", args("key", "create", "--team", "nope")...).expect(t, 1, "", `no team "nope"`)

	r = runCLI(t, "", args("key", "ls", "--team", "acme")...)
	r.expect(t, 0, second.KeyID, "")
	if strings.Contains(r.stdout, second.Key) || !strings.Contains(r.stdout, first.KeyID) {
		t.Fatalf("key ls shows a whole key or misses one:\n%s", r.stdout)
	}

	runCLI(t, "", args("key", "revoke", second.KeyID)...).expect(t, 0, "revoked "+second.KeyID, "")
	runCLI(t, "", args("key", "revoke", second.KeyID)...).expect(t, 1, "", "no API key with ID")

	st, err := openStore(context.Background(), serverConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.APIKeyByHash(context.Background(), cp.HashKey(second.Key)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked key still in the store: %v", err)
	}
	k, err := st.APIKeyByHash(context.Background(), cp.HashKey(first.Key))
	if err != nil || k.TeamID != first.TeamID {
		t.Fatalf("first key: %+v %v, want team %s", k, err, first.TeamID)
	}
}
