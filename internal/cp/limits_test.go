package cp

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/template"
)

// TestTimeoutBounds: a timeout beyond the maximum, including one whose seconds overflow
// time.Duration, is a 400 naming the field and the limit on every endpoint that takes one,
// and changes nothing.
func TestTimeoutBounds(t *testing.T) {
	_, hs, st := newTestCP(t)
	ctx := context.Background()
	end := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	st.CreateSandbox(ctx, store.Sandbox{ID: "t1", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning, StartedAt: time.Now().UTC(), EndAt: end})
	key := map[string]string{"X-API-Key": testKey}
	for _, ep := range []struct{ path, body string }{
		{"/sandboxes", `{"templateID":"base","timeout":%d}`},
		{"/v2/sandboxes", `{"templateID":"base","timeout":%d}`},
		{"/sandboxes/t1/timeout", `{"timeout":%d}`},
		{"/sandboxes/t1/connect", `{"timeout":%d}`},
		{"/sandboxes/t1/resume", `{"timeout":%d}`},
		{"/sandboxes/t1/fork", `{"timeout":%d}`},
	} {
		for _, sec := range []int64{9223372037, 1 << 62, 86401, -1} {
			status, body, _ := call(t, "POST", hs.URL+ep.path, fmt.Sprintf(ep.body, sec), key)
			if status != http.StatusBadRequest || !strings.Contains(body, "timeout must be 0 to 86400 seconds") {
				t.Errorf("POST %s timeout %d: %d %s, want 400 naming the limit", ep.path, sec, status, body)
			}
		}
	}
	if sb, _ := st.Sandbox(ctx, "t1"); !sb.EndAt.Equal(end) || sb.State != store.StateRunning {
		t.Fatalf("a refused timeout changed the sandbox: %+v", sb)
	}
}

// TestRequestBodyCap: a REST body over the cap is a 413.
func TestRequestBodyCap(t *testing.T) {
	_, hs, _ := newTestCP(t)
	big := `{"templateID":"base","metadata":{"k":"` + strings.Repeat("x", maxRequestBody) + `"}}`
	status, body, _ := call(t, "POST", hs.URL+"/sandboxes", big, map[string]string{"X-API-Key": testKey})
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d %s, want 413", status, body)
	}
}

// TestTemplateNameChecked: names that cannot be templates are a 400 naming the form before
// any lookup.
func TestTemplateNameChecked(t *testing.T) {
	_, hs, _ := newTestCP(t)
	key := map[string]string{"X-API-Key": testKey}
	for _, name := range []string{"../x", "a/b", "..", "Base", "x y", strings.Repeat("a", 64)} {
		status, body, _ := call(t, "POST", hs.URL+"/sandboxes", fmt.Sprintf(`{"templateID":%q}`, name), key)
		if status != http.StatusBadRequest || !strings.Contains(body, template.NameForm) {
			t.Errorf("create from %q: %d %s, want 400 naming the form", name, status, body)
		}
	}
	if status, body, _ := call(t, "GET", hs.URL+"/templates/..%2Fx", "", key); status != http.StatusBadRequest {
		t.Errorf("get template ../x: %d %s, want 400", status, body)
	}
}

// TestInvalidKeyRateLimit: invalid keys from one source run out after failBurst and get 429
// with Retry-After; a valid key in use keeps working from that source.
func TestInvalidKeyRateLimit(t *testing.T) {
	_, hs, _ := newTestCP(t)
	if status, _, _ := call(t, "GET", hs.URL+"/sandboxes", "", map[string]string{"X-API-Key": testKey}); status != 200 {
		t.Fatalf("valid key: %d", status)
	}
	bad := map[string]string{"X-API-Key": "e2b_" + strings.Repeat("9", 40)}
	for i := 0; i < failBurst; i++ {
		if status, body, _ := call(t, "GET", hs.URL+"/sandboxes", "", bad); status != http.StatusUnauthorized {
			t.Fatalf("invalid key %d: %d %s, want 401", i, status, body)
		}
	}
	status, _, hdr := call(t, "GET", hs.URL+"/sandboxes", "", bad)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Fatalf("invalid key past the burst: %d (Retry-After %q), want 429 with Retry-After", status, hdr.Get("Retry-After"))
	}
	if status, _, _ := call(t, "GET", hs.URL+"/sandboxes", "", map[string]string{"X-API-Key": testKey}); status != 200 {
		t.Fatalf("valid key from a limited source: %d, want 200", status)
	}
}

// TestFailLimiterBounded: many sources never grow the limiter past its bound, and sources
// are limited independently.
func TestFailLimiterBounded(t *testing.T) {
	l := newFailLimiter()
	for i := 0; i < failBurst; i++ {
		l.fail("10.0.0.1")
	}
	if !l.blocked("10.0.0.1") || l.blocked("10.0.0.2") {
		t.Fatal("limits are not per source")
	}
	for i := 0; i < 3*maxFailSources; i++ {
		l.fail(fmt.Sprintf("fd00::%x", i))
		if len(l.m) > maxFailSources {
			t.Fatalf("limiter tracks %d sources, bound %d", len(l.m), maxFailSources)
		}
	}
}
