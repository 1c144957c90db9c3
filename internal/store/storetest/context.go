package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/hearthsh/hearth/internal/store"
)

// testContext checks that a cancelled context stops reads, writes and transactions.
func testContext(t *testing.T, open Opener) {
	s, ctx := open(t), ctxFor(t)
	must(t, "create", s.CreateSandbox(ctx, sandbox("sb1", base)))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	checks := map[string]func() error{
		"Sandbox": func() error { _, err := s.Sandbox(cancelled, "sb1"); return err },
		"ListSandboxes": func() error {
			_, _, err := s.ListSandboxes(cancelled, store.SandboxFilter{})
			return err
		},
		"CreateSandbox": func() error { return s.CreateSandbox(cancelled, sandbox("sb2", base)) },
		"UpdateSandbox": func() error {
			_, err := s.UpdateSandbox(cancelled, "sb1", func(sb *store.Sandbox) error {
				sb.State = store.StatePaused
				return nil
			})
			return err
		},
		"APIKeyByHash": func() error { _, err := s.APIKeyByHash(cancelled, "h"); return err },
		"PutTemplate":  func() error { return s.PutTemplate(cancelled, template("t", base, "a")) },
		"PutHost":      func() error { return s.PutHost(cancelled, host("h")) },
	}
	for name, call := range checks {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	// Nothing was written.
	if got := getSandbox(t, s, "sb1"); got.State != store.StateRunning || got.Version != 1 {
		t.Fatalf("sandbox changed by a cancelled update: %+v", got)
	}
	if _, err := s.Sandbox(ctx, "sb2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("sandbox created with a cancelled context: %v", err)
	}
}
