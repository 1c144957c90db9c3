// Package web is Hearth's dashboard: pages for a team's sandboxes (list, create, pause,
// resume, kill, timeouts, metrics, logs), a terminal and a file browser into each sandbox,
// and the team's API keys. The control plane serves it on its API port under Prefix.
//
// The dashboard holds no authority of its own. A user signs in with an API key, which is kept
// in an HttpOnly cookie; every request the dashboard makes for them goes in-process through
// the control plane's REST handler with that key in X-API-Key, so the REST API's team checks
// decide what they see. Terminals and files reach envd through the control plane's sandbox
// proxy (also in-process) with the sandbox's envd access token, which only the REST API hands
// out, and only to the sandbox's team.
package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Prefix is the path the dashboard is served under.
const Prefix = "/dashboard/"

//go:embed static
var staticFS embed.FS

//go:embed templates/*.html
var templateFS embed.FS

// Config configures a dashboard.
type Config struct {
	// API is the control plane's REST handler (what serves /sandboxes, /templates, ...).
	API http.Handler
	// Proxy is the control plane's sandbox proxy handler.
	Proxy http.Handler
	// Previews says how the links to sandbox ports are made.
	Previews Previews
	Log      *slog.Logger
}

// Handler serves the dashboard.
type Handler struct {
	api      http.Handler
	envd     *envdDialer
	previews Previews
	log      *slog.Logger
	pages    *template.Template
	mux      *http.ServeMux
}

// New returns the dashboard handler. It serves paths under Prefix.
func New(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	h := &Handler{
		api:      cfg.API,
		envd:     newEnvdDialer(cfg.Proxy),
		previews: cfg.Previews,
		log:      cfg.Log,
		pages:    template.Must(template.ParseFS(templateFS, "templates/*.html")),
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", staticFiles(http.FileServerFS(static))))
	mux.HandleFunc("GET "+Prefix+"signin", h.signinPage)
	mux.HandleFunc("POST "+Prefix+"signin", h.signin)
	mux.HandleFunc("POST "+Prefix+"signout", h.session(h.signout))
	mux.HandleFunc("GET "+Prefix+"{$}", h.page("sandboxes"))
	mux.HandleFunc("GET "+Prefix+"sandboxes/{id}", h.page("sandbox"))
	mux.HandleFunc("GET "+Prefix+"keys", h.page("keys"))
	mux.HandleFunc("GET "+Prefix+"templates", h.page("templates"))
	mux.HandleFunc(Prefix+"api/", h.session(h.passthrough))
	mux.HandleFunc("GET "+Prefix+"sbx/{id}/terminal", h.session(h.terminal))
	mux.HandleFunc("GET "+Prefix+"sbx/{id}/files", h.session(h.listFiles))
	mux.HandleFunc("GET "+Prefix+"sbx/{id}/files/download", h.session(h.downloadFile))
	mux.HandleFunc("POST "+Prefix+"sbx/{id}/files/upload", h.session(h.uploadFile))
	mux.HandleFunc("DELETE "+Prefix+"sbx/{id}/files", h.session(h.deleteFile))
	mux.HandleFunc("GET "+Prefix+"sbx/{id}/ports", h.session(h.listPorts))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no dashboard page at "+r.URL.Path, http.StatusNotFound)
	})
	h.mux = mux
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// The dashboard's own scripts and styles only; xterm.js sets inline styles. No framing
	// (clickjacking), no sniffing, no caching of pages that show a team's data.
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

func staticFiles(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "" {
			http.NotFound(w, r) // files only, no directory listings
			return
		}
		w.Header().Set("Cache-Control", "no-cache") // revalidate: assets change with the binary
		next.ServeHTTP(w, r)
	})
}

// cookieName holds the signed-in API key.
const cookieName = "hearth_dashboard_key"

// sessionMaxAge bounds how long a browser keeps the key.
const sessionMaxAge = 12 * time.Hour

// csrfHeader carries the CSRF token on the dashboard's fetch requests; forms send csrfField.
const (
	csrfHeader = "X-CSRF-Token"
	csrfField  = "csrf"
)

// keyOf returns the signed-in API key, or "".
func keyOf(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// csrfToken is an HMAC keyed with the session's API key: an attacker who cannot read the
// (HttpOnly) cookie cannot compute it, a token from another session does not fit this one,
// and every control plane replica (and a restarted one) computes the same token, so a page
// keeps working behind a load balancer. The token reveals nothing of the key.
func (h *Handler) csrfToken(key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("hearth dashboard csrf token"))
	return hex.EncodeToString(m.Sum(nil))
}

func (h *Handler) validCSRF(key, token string) bool {
	want := h.csrfToken(key)
	return token != "" && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}

// sameOrigin reports whether a request comes from a page of this origin. Browsers send
// Origin on every POST, DELETE and WebSocket handshake; Sec-Fetch-Site covers the rest.
// A request with neither is not from a browser page and is refused for changes.
func sameOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" {
			return errors.New("unreadable Origin header")
		}
		if !strings.EqualFold(u.Host, r.Host) {
			return errors.New("request from another origin (" + o + ")")
		}
		if want := schemeOf(r); u.Scheme != want {
			return errors.New("request from another origin (" + o + ")")
		}
		return nil
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin":
		return nil
	case "":
		return errors.New("no Origin header: changes are accepted only from the dashboard's pages")
	default:
		return errors.New("request from another site")
	}
}

func schemeOf(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// unsafeMethod is a method that may change something.
func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// session lets a request through only when it is signed in; a change (or a WebSocket,
// which can change a sandbox) must also come from this origin and carry the session's CSRF
// token.
func (h *Handler) session(next func(w http.ResponseWriter, r *http.Request, key string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := keyOf(r)
		if key == "" {
			jsonError(w, http.StatusUnauthorized, "not signed in: sign in at "+Prefix+"signin")
			return
		}
		if unsafeMethod(r.Method) || isWebSocket(r) {
			if err := sameOrigin(r); err != nil {
				jsonError(w, http.StatusForbidden, err.Error())
				return
			}
			tok := r.Header.Get(csrfHeader)
			if tok == "" {
				tok = r.URL.Query().Get(csrfField)
			}
			if tok == "" && r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
				tok = r.PostFormValue(csrfField)
			}
			if !h.validCSRF(key, tok) {
				jsonError(w, http.StatusForbidden, "missing or stale CSRF token: reload the page")
				return
			}
		}
		next(w, r, key)
	}
}

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, key string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: key, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

type pageData struct {
	Page  string
	CSRF  string
	Error string
	ID    string
}

// page serves a page shell; its script fills it from the API. Without a session it sends
// the browser to sign in.
func (h *Handler) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := keyOf(r)
		if key == "" {
			http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
			return
		}
		h.render(w, http.StatusOK, "page.html", pageData{Page: name, CSRF: h.csrfToken(key), ID: r.PathValue("id")})
	}
}

func (h *Handler) render(w http.ResponseWriter, status int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := h.pages.ExecuteTemplate(w, name, d); err != nil {
		h.log.Warn("dashboard: render page", "page", name, "err", err)
	}
}

func (h *Handler) signinPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "signin.html", pageData{})
}

// signin checks the key against the REST API and keeps it in the session cookie.
func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	// Same origin only: otherwise another site could sign a visitor in with the attacker's
	// key (login CSRF) and watch what they do in its sandboxes.
	if err := sameOrigin(r); err != nil {
		h.render(w, http.StatusForbidden, "signin.html", pageData{Error: err.Error()})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	key := strings.TrimSpace(r.PostFormValue("key"))
	if key == "" {
		h.render(w, http.StatusBadRequest, "signin.html", pageData{Error: "enter an API key (e2b_ followed by hex digits)"})
		return
	}
	res := h.call(r, key, http.MethodGet, "/templates", nil)
	if res.status != http.StatusOK {
		h.render(w, res.status, "signin.html", pageData{Error: "sign-in refused: " + res.message()})
		return
	}
	setSessionCookie(w, r, key, int(sessionMaxAge/time.Second))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (h *Handler) signout(w http.ResponseWriter, r *http.Request, _ string) {
	setSessionCookie(w, r, "", -1)
	http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
}
