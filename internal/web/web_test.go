package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/internal/store/sqlite"
)

// dashboard is a control plane (its real API handler, with the dashboard mounted) over a
// store with two teams, each with a key and a sandbox.
type dashboard struct {
	srv                *httptest.Server
	api                http.Handler
	st                 store.Store
	keyMine, keyOther  string
	sandboxMine, other string
	// builtTemplate is a template of the key's team with one failed API build, builtBuild.
	builtTemplate, builtBuild string
}

func newDashboard(t *testing.T) *dashboard {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := &dashboard{keyMine: cp.NewAPIKey(), keyOther: cp.NewAPIKey(), sandboxMine: "sbxmine", other: "sbxother"}
	if err := st.CreateTeam(ctx, store.Team{ID: "t-other", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := cp.RegisterKey(ctx, st, d.keyMine, "mine", store.DefaultTeam); err != nil {
		t.Fatal(err)
	}
	if err := cp.RegisterKey(ctx, st, d.keyOther, "others", "t-other"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, sb := range []store.Sandbox{
		{ID: d.sandboxMine, TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning, StartedAt: now, EndAt: now.Add(time.Hour),
			EnvdAccessToken: testEnvdToken},
		{ID: d.other, TeamID: "t-other", TemplateID: "base", HostID: "h", State: store.StateRunning, StartedAt: now, EndAt: now.Add(time.Hour)},
	} {
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	// A template of the team built through the API, whose build failed after 150 log lines.
	d.builtTemplate, d.builtBuild = "tplmine", "0b8e2c1a-5f4d-4e5a-9c1b-2d3e4f5a6b7c"
	if err := st.PutTemplate(ctx, store.Template{ID: d.builtTemplate, TeamID: store.DefaultTeam, Aliases: []string{"my-app"}, BuildStatus: store.BuildError,
		CPUs: 2, MemoryMiB: 1024, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTemplateBuild(ctx, store.TemplateBuild{ID: d.builtBuild, TemplateID: d.builtTemplate, TeamID: store.DefaultTeam,
		Status: store.BuildError, Reason: "failed to run command 'false': exit status 1", ReasonStep: "2", CPUs: 2, MemoryMiB: 1024,
		CreatedAt: now, UpdatedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	var lines []store.BuildLogEntry
	for i := range 150 {
		lines = append(lines, store.BuildLogEntry{Seq: i, Time: now, Level: "info", Step: "2", Message: fmt.Sprintf("step 2 line %d", i)})
	}
	if err := st.AppendBuildLogs(ctx, d.builtBuild, lines); err != nil {
		t.Fatal(err)
	}
	s := cp.New(cp.Config{Store: st, Log: slog.New(slog.DiscardHandler), AgentToken: "agent-token"})
	d.st = st
	d.api = s.APIHandler()
	d.srv = httptest.NewServer(d.api)
	t.Cleanup(d.srv.Close)
	return d
}

// browser is a cookie-keeping client that does not follow redirects, so tests see them.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (d *dashboard) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: d.srv.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// do sends a request; origin "" sends no Origin header.
func (b *browser) do(method, path, body, origin string, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res, string(out)
}

func (b *browser) signin(key string) *http.Response {
	b.t.Helper()
	res, _ := b.do("POST", "/dashboard/signin", url.Values{"key": {key}}.Encode(), b.base,
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	return res
}

// testEnvdToken is the envd access token of the team's stored sandbox.
const testEnvdToken = "envd-token-of-sbxmine"

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)">`)

// csrf reads the token from a page, as the page's script does.
func (b *browser) csrf() string {
	b.t.Helper()
	res, body := b.do("GET", "/dashboard/", "", "", nil)
	m := csrfMeta.FindStringSubmatch(body)
	if res.StatusCode != 200 || m == nil {
		b.t.Fatalf("dashboard page: %d, no CSRF token in %q", res.StatusCode, body)
	}
	return m[1]
}

func TestSignIn(t *testing.T) {
	d := newDashboard(t)
	cases := []struct {
		name, key, origin string
		wantStatus        int
		wantCookie        bool
		wantText          string
	}{
		{"valid key", d.keyMine, d.srv.URL, http.StatusSeeOther, true, ""},
		{"unknown key", cp.NewAPIKey(), d.srv.URL, http.StatusUnauthorized, false, "invalid API key"},
		{"empty key", "", d.srv.URL, http.StatusBadRequest, false, "enter an API key"},
		{"from another site", d.keyMine, "https://evil.example", http.StatusForbidden, false, "another origin"},
		{"without Origin", d.keyMine, "", http.StatusForbidden, false, "no Origin header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := d.browser(t)
			res, body := b.do("POST", "/dashboard/signin", url.Values{"key": {c.key}}.Encode(), c.origin,
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			if res.StatusCode != c.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, c.wantStatus, body)
			}
			if !strings.Contains(body, c.wantText) {
				t.Errorf("page does not say %q: %s", c.wantText, body)
			}
			var cookie *http.Cookie
			for _, ck := range res.Cookies() {
				if ck.Name == "hearth_dashboard_key" {
					cookie = ck
				}
			}
			if (cookie != nil) != c.wantCookie {
				t.Fatalf("session cookie set = %v, want %v", cookie != nil, c.wantCookie)
			}
			if cookie == nil {
				return
			}
			if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/dashboard/" {
				t.Errorf("cookie must be HttpOnly, SameSite=Strict, Path=/dashboard/: %+v", cookie)
			}
			if loc := res.Header.Get("Location"); loc != "/dashboard/" {
				t.Errorf("redirect to %q, want /dashboard/", loc)
			}
		})
	}
}

func TestPagesNeedASession(t *testing.T) {
	d := newDashboard(t)
	b := d.browser(t)
	for _, p := range []string{"/dashboard/", "/dashboard/keys", "/dashboard/templates", "/dashboard/sandboxes/" + d.sandboxMine} {
		res, _ := b.do("GET", p, "", "", nil)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/signin" {
			t.Errorf("GET %s signed out: %d to %q, want 303 to the sign-in page", p, res.StatusCode, res.Header.Get("Location"))
		}
	}
	res, body := b.do("GET", "/dashboard/api/v2/sandboxes", "", "", nil)
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("API signed out: %d %s, want 401", res.StatusCode, body)
	}
	b.signin(d.keyMine)
	res, body = b.do("GET", "/dashboard/", "", "", nil)
	if res.StatusCode != 200 || !strings.Contains(body, `id="sandboxes"`) {
		t.Fatalf("signed-in list page: %d %s", res.StatusCode, body)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q must restrict scripts to the dashboard's and forbid framing", csp)
	}
	// Sign out clears the cookie; the API is closed again.
	tok := b.csrf()
	res, _ = b.do("POST", "/dashboard/signout", url.Values{"csrf": {tok}}.Encode(), d.srv.URL,
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", res.StatusCode)
	}
	if res, _ := b.do("GET", "/dashboard/api/v2/sandboxes", "", "", nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("API after sign out: %d, want 401", res.StatusCode)
	}
}

// TestTeamIsolation: the dashboard shows a key only its own team's sandboxes and keys, and
// another team's sandbox is as absent as one that does not exist (the REST checks apply).
func TestTeamIsolation(t *testing.T) {
	d := newDashboard(t)
	for _, c := range []struct {
		key, see, notSee string
	}{{d.keyMine, d.sandboxMine, d.other}, {d.keyOther, d.other, d.sandboxMine}} {
		b := d.browser(t)
		b.signin(c.key)
		_, body := b.do("GET", "/dashboard/api/v2/sandboxes", "", "", nil)
		var list []struct{ SandboxID string }
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("list: %v: %s", err, body)
		}
		if len(list) != 1 || list[0].SandboxID != c.see {
			t.Errorf("list = %+v, want only %s", list, c.see)
		}
		for _, p := range []string{"/dashboard/api/sandboxes/" + c.notSee, "/dashboard/sbx/" + c.notSee + "/files?path=/"} {
			if res, body := b.do("GET", p, "", "", nil); res.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s (another team's): %d %s, want 404", p, res.StatusCode, body)
			}
		}
		_, body = b.do("GET", "/dashboard/api/api-keys", "", "", nil)
		if n := strings.Count(body, `"id"`); n != 1 {
			t.Errorf("keys page lists %d keys, want the team's one: %s", n, body)
		}
	}
}

// TestChangesNeedCSRFAndSameOrigin: a request that changes something must come from this
// origin with the session's token.
func TestChangesNeedCSRFAndSameOrigin(t *testing.T) {
	d := newDashboard(t)
	b := d.browser(t)
	b.signin(d.keyMine)
	tok := b.csrf()
	stranger := d.browser(t)
	stranger.signin(d.keyOther)
	otherTok := stranger.csrf()
	cases := []struct {
		name, origin, token string
		want                int
	}{
		{"no token", d.srv.URL, "", http.StatusForbidden},
		{"another session's token", d.srv.URL, otherTok, http.StatusForbidden},
		{"token from another origin", "https://evil.example", tok, http.StatusForbidden},
		{"token without Origin", "", tok, http.StatusForbidden},
		{"same origin with token", d.srv.URL, tok, http.StatusCreated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{"Content-Type": "application/json"}
			if c.token != "" {
				hdr["X-CSRF-Token"] = c.token
			}
			res, body := b.do("POST", "/dashboard/api/api-keys", `{"name":"from-dashboard"}`, c.origin, hdr)
			if res.StatusCode != c.want {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, c.want, body)
			}
		})
	}
	// Reads need no token.
	if res, body := b.do("GET", "/dashboard/api/api-keys", "", "", nil); res.StatusCode != 200 || !strings.Contains(body, "from-dashboard") {
		t.Errorf("key list: %d %s", res.StatusCode, body)
	}
}

func TestPassthroughReachesOnlyDashboardRoutes(t *testing.T) {
	d := newDashboard(t)
	b := d.browser(t)
	b.signin(d.keyMine)
	tok := b.csrf()
	hdr := map[string]string{"X-CSRF-Token": tok}
	for _, p := range []string{"/dashboard/api/hearth/v1/hosts/h/heartbeat", "/dashboard/api/health", "/dashboard/api/dashboard/api/sandboxes"} {
		if res, body := b.do("POST", p, "{}", d.srv.URL, hdr); res.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s: %d %s, want 404", p, res.StatusCode, body)
		}
	}
}

func TestAssetsAreEmbedded(t *testing.T) {
	d := newDashboard(t)
	b := d.browser(t)
	for _, c := range []struct{ path, want string }{
		{"/dashboard/static/app.js", "terminalView"},
		{"/dashboard/static/vendor/xterm.js", "Terminal"},
		{"/dashboard/static/vendor/addon-fit.js", "FitAddon"},
		{"/dashboard/static/vendor/xterm.css", ".xterm"},
	} {
		res, body := b.do("GET", c.path, "", "", nil)
		if res.StatusCode != 200 || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d, body without %q", c.path, res.StatusCode, c.want)
		}
	}
	for _, p := range []string{"/dashboard/static/", "/dashboard/static/vendor/"} {
		if res, _ := b.do("GET", p, "", "", nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404 (no directory listings)", p, res.StatusCode)
		}
	}
}

// TestCSRFTokenWorksOnEveryReplica: a page served by one control plane replica keeps working
// when its next request reaches another (or the same one restarted).
func TestCSRFTokenWorksOnEveryReplica(t *testing.T) {
	d := newDashboard(t)
	b := d.browser(t)
	b.signin(d.keyMine)
	tok := b.csrf()
	replica := httptest.NewServer(cp.New(cp.Config{Store: d.st, Log: slog.New(slog.DiscardHandler), AgentToken: "agent-token"}).APIHandler())
	defer replica.Close()
	u, _ := url.Parse(d.srv.URL)
	r, _ := url.Parse(replica.URL)
	for _, c := range b.c.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/dashboard/"}) {
		b.c.Jar.SetCookies(&url.URL{Scheme: "http", Host: r.Host, Path: "/dashboard/"}, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/dashboard/"}})
	}
	b.base = replica.URL
	res, body := b.do("POST", "/dashboard/api/api-keys", `{"name":"via-replica"}`, replica.URL,
		map[string]string{"Content-Type": "application/json", "X-CSRF-Token": tok})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("change on another replica with the page's token: %d %s, want 201", res.StatusCode, body)
	}
}
