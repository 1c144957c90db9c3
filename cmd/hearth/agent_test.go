package main

import (
	"errors"
	"testing"

	"github.com/hearthsh/hearth/internal/template"
)

// TestTemplateResolverRejectsBadNames: the agent's template lookup (what Create resolves a
// template name with) refuses names outside the template form before any path join.
func TestTemplateResolverRejectsBadNames(t *testing.T) {
	resolve := templateResolver(t.TempDir())
	for _, name := range []string{"../x", "../../etc", "a/b", ".."} {
		if _, err := resolve(name); !errors.Is(err, template.ErrInvalidName) {
			t.Errorf("resolve %q: %v, want an invalid name error", name, err)
		}
	}
}
