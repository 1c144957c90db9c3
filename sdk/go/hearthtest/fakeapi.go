package hearthtest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FakeEnvdVersion is the envdVersion the fake reports.
const FakeEnvdVersion = "0.6.4"

// FakeAPI is a strict, in-memory fake of the REST API. Sandboxes it creates have no envd:
// point the client's SandboxURL at an Envd to run commands in them.
type FakeAPI struct {
	// URL is the fake's base URL; use it as a client's APIURL.
	URL string
	// APIKey is the only key the fake accepts in X-API-Key.
	APIKey string
	// EnvdAccessToken, when set, is issued to every sandbox, as the real API issues one to
	// every sandbox whatever `secure` says.
	EnvdAccessToken string

	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	sandboxes map[string]*fakeSandbox
	order     []string // creation order, which lists follow
	templates []fakeTemplate
	calls     []string
	bodies    []string
}

// fakeSandbox is the fake's record of a sandbox, in the API's field names.
type fakeSandbox struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias"`
	ClientID    string            `json:"clientID"`
	StartedAt   string            `json:"startedAt"`
	EndAt       string            `json:"endAt"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int               `json:"memoryMB"`
	DiskSizeMB  int               `json:"diskSizeMB"`
	Metadata    map[string]string `json:"metadata"`
	State       string            `json:"state"`
	EnvdVersion string            `json:"envdVersion"`

	token     string
	envVars   map[string]string
	autoPause bool
	allowOut  []string
	denyOut   []string
	internet  bool
}

// fakeNetwork is the network option the fake accepts: the fields Hearth implements.
type fakeNetwork struct {
	AllowOut           []string `json:"allowOut"`
	DenyOut            []string `json:"denyOut"`
	AllowPublicTraffic *bool    `json:"allowPublicTraffic"`
}

type fakeTemplate struct {
	TemplateID  string   `json:"templateID"`
	BuildID     string   `json:"buildID"`
	CPUCount    int      `json:"cpuCount"`
	MemoryMB    int      `json:"memoryMB"`
	DiskSizeMB  int      `json:"diskSizeMB"`
	Public      bool     `json:"public"`
	Aliases     []string `json:"aliases"`
	CreatedAt   string   `json:"createdAt"`
	UpdatedAt   string   `json:"updatedAt"`
	EnvdVersion string   `json:"envdVersion"`
	BuildStatus string   `json:"buildStatus"`
}

// fakeClientID is the deprecated clientID E2B's API still returns.
const fakeClientID = "6532622b"

// NewFakeAPI starts a fake API that knows the template "base" (alias "base") and accepts the
// key "e2b_" followed by 40 zeros. It stops when the test ends.
func NewFakeAPI(t testing.TB) *FakeAPI {
	f := &FakeAPI{
		APIKey:    "e2b_" + strings.Repeat("0", 40),
		t:         t,
		sandboxes: map[string]*fakeSandbox{},
	}
	f.AddTemplate("rki5dems9wqfm4r03t7g", "base")
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// AddTemplate registers a ready template with the given ID and aliases.
func (f *FakeAPI) AddTemplate(id string, aliases ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339)
	f.templates = append(f.templates, fakeTemplate{
		TemplateID: id, BuildID: "b-" + id, CPUCount: 2, MemoryMB: 512, DiskSizeMB: 1024, Public: false,
		Aliases: append([]string{}, aliases...), CreatedAt: now, UpdatedAt: now, EnvdVersion: FakeEnvdVersion,
		BuildStatus: "ready",
	})
}

// AddSandbox registers a sandbox in the given state ("running" or "paused") and returns its
// ID, for tests that need sandboxes they did not create through the client.
func (f *FakeAPI) AddSandbox(id, state string, metadata map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addLocked(id, f.templates[0].TemplateID, "base", state, metadata, nil, 300, "")
	return id
}

// State returns the state of sandbox id, "" when it does not exist.
func (f *FakeAPI) State(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.sandboxes[id]; s != nil {
		return s.State
	}
	return ""
}

// Calls returns "METHOD /path" for every request served so far, in order.
func (f *FakeAPI) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// LastBody returns the body of the last request that had one.
func (f *FakeAPI) LastBody() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return ""
	}
	return f.bodies[len(f.bodies)-1]
}

// addLocked records a new sandbox; f.mu must be held.
func (f *FakeAPI) addLocked(id, templateID, alias, state string, md, envs map[string]string, timeout int, token string) *fakeSandbox {
	now := time.Now().UTC().Truncate(time.Second)
	if md == nil {
		md = map[string]string{}
	}
	s := &fakeSandbox{
		SandboxID: id, TemplateID: templateID, Alias: alias, ClientID: fakeClientID,
		StartedAt: now.Format(time.RFC3339), EndAt: now.Add(time.Duration(timeout) * time.Second).Format(time.RFC3339),
		CPUCount: 2, MemoryMB: 512, DiskSizeMB: 1024, Metadata: md, State: state, EnvdVersion: FakeEnvdVersion,
		token: token, envVars: envs,
	}
	f.sandboxes[id] = s
	f.order = append(f.order, id)
	return s
}

// violation fails the test for a request the real API would reject as malformed, and answers
// it with 400 so the client sees a failure too.
func (f *FakeAPI) violation(w http.ResponseWriter, format string, args ...any) {
	msg := "fake API: " + fmt.Sprintf(format, args...)
	f.t.Errorf("%s", msg)
	writeError(w, http.StatusBadRequest, msg)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *FakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.violation(w, "read body: %v", err)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	if len(body) > 0 {
		f.bodies = append(f.bodies, string(body))
	}
	f.mu.Unlock()

	if r.Header.Get("X-API-Key") != f.APIKey {
		writeError(w, http.StatusUnauthorized, "Invalid API key, it must start with 'e2b_' and be valid")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	route := r.Method + " " + r.URL.Path
	switch {
	case route == "POST /sandboxes":
		f.create(w, r, body)
	case route == "GET /v2/sandboxes":
		f.list(w, r, body)
	case route == "GET /templates":
		f.noInput(w, r, body, func() { f.listTemplates(w) })
	case len(parts) == 2 && parts[0] == "sandboxes" && r.Method == http.MethodGet:
		f.noInput(w, r, body, func() { f.get(w, parts[1]) })
	case len(parts) == 2 && parts[0] == "sandboxes" && r.Method == http.MethodDelete:
		f.noInput(w, r, body, func() { f.kill(w, parts[1]) })
	case len(parts) == 3 && parts[0] == "sandboxes" && parts[2] == "fork" && r.Method == http.MethodPost:
		f.fork(w, r, body, parts[1])
	case len(parts) == 3 && parts[0] == "sandboxes" && parts[2] == "network" && r.Method == http.MethodPut:
		f.network(w, r, body, parts[1])
	case len(parts) == 3 && parts[0] == "sandboxes" && r.Method == http.MethodPost:
		f.action(w, r, body, parts[1], parts[2])
	default:
		f.violation(w, "no route %s", route)
	}
}

// noInput enforces that a request has neither query nor body.
func (f *FakeAPI) noInput(w http.ResponseWriter, r *http.Request, body []byte, next func()) {
	if r.URL.RawQuery != "" || len(body) > 0 {
		f.violation(w, "%s %s takes no query or body, got query %q body %q", r.Method, r.URL.Path, r.URL.RawQuery, body)
		return
	}
	next()
}

// decodeStrict decodes a JSON body into v, which must be a struct of pointers, rejecting
// unknown fields, a wrong content type, trailing data, and any field in required left out.
func (f *FakeAPI) decodeStrict(w http.ResponseWriter, r *http.Request, body []byte, v any, required ...string) bool {
	if r.URL.RawQuery != "" {
		f.violation(w, "%s %s takes no query, got %q", r.Method, r.URL.Path, r.URL.RawQuery)
		return false
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		f.violation(w, "%s %s: Content-Type %q, want application/json", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.violation(w, "%s %s: body %s: %v", r.Method, r.URL.Path, body, err)
		return false
	}
	if dec.More() {
		f.violation(w, "%s %s: trailing data after the JSON body", r.Method, r.URL.Path)
		return false
	}
	var present map[string]json.RawMessage
	_ = json.Unmarshal(body, &present)
	for _, k := range required {
		if raw, ok := present[k]; !ok || string(raw) == "null" {
			f.violation(w, "%s %s: body %s lacks required field %q", r.Method, r.URL.Path, body, k)
			return false
		}
	}
	return true
}

func (f *FakeAPI) create(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		TemplateID          *string           `json:"templateID"`
		Timeout             *int              `json:"timeout"`
		Metadata            map[string]string `json:"metadata"`
		EnvVars             map[string]string `json:"envVars"`
		AutoPause           *bool             `json:"autoPause"`
		Secure              *bool             `json:"secure"`
		AllowInternetAccess *bool             `json:"allow_internet_access"`
		Network             *fakeNetwork      `json:"network"`
	}
	if !f.decodeStrict(w, r, body, &in, "templateID", "timeout") {
		return
	}
	if *in.Timeout <= 0 {
		f.violation(w, "POST /sandboxes: timeout %d, want seconds > 0", *in.Timeout)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tmpl, alias := f.findTemplateLocked(*in.TemplateID)
	if tmpl == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("template '%s' not found", *in.TemplateID))
		return
	}
	s := f.addLocked(newID(), tmpl.TemplateID, alias, "running", in.Metadata, in.EnvVars, *in.Timeout, f.EnvdAccessToken)
	s.autoPause = in.AutoPause != nil && *in.AutoPause
	s.internet = in.AllowInternetAccess == nil || *in.AllowInternetAccess
	if in.Network != nil {
		s.allowOut, s.denyOut = in.Network.AllowOut, in.Network.DenyOut
	}
	writeJSON(w, http.StatusCreated, f.createdLocked(s))
}

// createdLocked is E2B's Sandbox schema: the answer to create, connect and resume.
func (f *FakeAPI) createdLocked(s *fakeSandbox) map[string]any {
	out := map[string]any{
		"sandboxID": s.SandboxID, "templateID": s.TemplateID, "clientID": s.ClientID,
		"envdVersion": s.EnvdVersion, "domain": nil,
	}
	if s.Alias != "" {
		out["alias"] = s.Alias
	}
	if s.token != "" {
		out["envdAccessToken"] = s.token
	}
	return out
}

func (f *FakeAPI) findTemplateLocked(ref string) (*fakeTemplate, string) {
	for i := range f.templates {
		t := &f.templates[i]
		if t.TemplateID == ref {
			alias := ""
			if len(t.Aliases) > 0 {
				alias = t.Aliases[0]
			}
			return t, alias
		}
		for _, a := range t.Aliases {
			if a == ref {
				return t, a
			}
		}
	}
	return nil, ""
}

func (f *FakeAPI) list(w http.ResponseWriter, r *http.Request, body []byte) {
	if len(body) > 0 {
		f.violation(w, "GET /v2/sandboxes takes no body")
		return
	}
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "metadata", "state", "limit", "nextToken":
		default:
			f.violation(w, "GET /v2/sandboxes: unknown query parameter %q", k)
			return
		}
	}
	states := map[string]bool{}
	for _, s := range q["state"] {
		if s != "running" && s != "paused" && s != "lost" {
			f.violation(w, "GET /v2/sandboxes: state %q, want running, paused or lost", s)
			return
		}
		states[s] = true
	}
	if len(states) == 0 {
		states = map[string]bool{"running": true, "paused": true}
	}
	md, err := decodeMetadataFilter(q.Get("metadata"))
	if err != nil {
		f.violation(w, "GET /v2/sandboxes: metadata %q: %v", q.Get("metadata"), err)
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			f.violation(w, "GET /v2/sandboxes: limit %q, want 1..100", l)
			return
		}
		limit = n
	}
	start := 0
	if tok := q.Get("nextToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "page-"))
		if err != nil || !strings.HasPrefix(tok, "page-") {
			writeError(w, http.StatusBadRequest, "invalid next token")
			return
		}
		start = n
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var match []*fakeSandbox
	for _, id := range f.order {
		s := f.sandboxes[id]
		if s == nil || !states[s.State] || !hasAll(s.Metadata, md) {
			continue
		}
		match = append(match, s)
	}
	page := []*fakeSandbox{}
	if start < len(match) {
		end := min(start+limit, len(match))
		page = match[start:end]
		if end < len(match) {
			w.Header().Set("X-Next-Token", "page-"+strconv.Itoa(end))
		}
	}
	writeJSON(w, http.StatusOK, page)
}

// decodeMetadataFilter undoes the two layers of encoding E2B's SDKs apply: the parameter is a
// form (k=v&k2=v2) whose keys and values are themselves percent-encoded.
func decodeMetadataFilter(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	form, err := url.ParseQuery(s)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, vs := range form {
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, err
		}
		val, err := url.PathUnescape(vs[len(vs)-1])
		if err != nil {
			return nil, err
		}
		out[key] = val
	}
	return out, nil
}

func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (f *FakeAPI) listTemplates(w http.ResponseWriter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON(w, http.StatusOK, f.templates)
}

func (f *FakeAPI) get(w http.ResponseWriter, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sandboxes[id]
	if s == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox \"%s\" doesn't exist or you don't have access to it", id))
		return
	}
	b, _ := json.Marshal(s)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	out["domain"] = nil
	if s.token != "" {
		out["envdAccessToken"] = s.token
	}
	out["allowInternetAccess"] = s.internet
	out["network"] = map[string]any{"allowOut": s.allowOut, "denyOut": s.denyOut}
	writeJSON(w, http.StatusOK, out)
}

// fork is POST /sandboxes/{id}/fork: count copies of a running sandbox.
func (f *FakeAPI) fork(w http.ResponseWriter, r *http.Request, body []byte, id string) {
	var in struct {
		Timeout *int `json:"timeout"`
		Count   *int `json:"count"`
	}
	if !f.decodeStrict(w, r, body, &in) {
		return
	}
	count, timeout := 1, 15
	if in.Count != nil {
		count = *in.Count
	}
	if in.Timeout != nil {
		timeout = *in.Timeout
	}
	if count < 1 || count > 100 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("count must be 1 to 100, got %d", count))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sandboxes[id]
	if s == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox \"%s\" not found", id))
		return
	}
	if s.State != "running" {
		writeError(w, http.StatusConflict, fmt.Sprintf("sandbox %s is %s: only a running sandbox can be forked", id, s.State))
		return
	}
	var out []map[string]any
	for range count {
		c := f.addLocked(newID(), s.TemplateID, s.Alias, "running", maps.Clone(s.Metadata), maps.Clone(s.envVars), timeout, f.EnvdAccessToken)
		out = append(out, map[string]any{"sandbox": f.createdLocked(c)})
	}
	writeJSON(w, http.StatusCreated, out)
}

// network is PUT /sandboxes/{id}/network: it replaces the outbound policy.
func (f *FakeAPI) network(w http.ResponseWriter, r *http.Request, body []byte, id string) {
	var in struct {
		AllowOut            []string `json:"allowOut"`
		DenyOut             []string `json:"denyOut"`
		AllowInternetAccess *bool    `json:"allow_internet_access"`
	}
	if !f.decodeStrict(w, r, body, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sandboxes[id]
	if s == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox \"%s\" not found", id))
		return
	}
	s.allowOut, s.denyOut = in.AllowOut, in.DenyOut
	s.internet = in.AllowInternetAccess == nil || *in.AllowInternetAccess
	w.WriteHeader(http.StatusNoContent)
}

func (f *FakeAPI) kill(w http.ResponseWriter, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sandboxes[id] == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox \"%s\" not found", id))
		return
	}
	delete(f.sandboxes, id)
	w.WriteHeader(http.StatusNoContent)
}

// action serves POST /sandboxes/{id}/{pause,connect,resume,timeout}.
func (f *FakeAPI) action(w http.ResponseWriter, r *http.Request, body []byte, id, verb string) {
	var in struct {
		Timeout   *int  `json:"timeout"`
		AutoPause *bool `json:"autoPause"`
	}
	switch verb {
	case "pause":
		if r.URL.RawQuery != "" || len(body) > 0 {
			f.violation(w, "POST /sandboxes/{id}/pause takes no query or body, got %q %q", r.URL.RawQuery, body)
			return
		}
	case "connect", "timeout":
		var only struct {
			Timeout *int `json:"timeout"`
		}
		if !f.decodeStrict(w, r, body, &only, "timeout") {
			return
		}
		in.Timeout = only.Timeout
	case "resume":
		if !f.decodeStrict(w, r, body, &in, "timeout") {
			return
		}
	default:
		f.violation(w, "no route POST /sandboxes/{id}/%s", verb)
		return
	}
	if in.Timeout != nil && *in.Timeout <= 0 {
		f.violation(w, "POST /sandboxes/{id}/%s: timeout %d, want seconds > 0", verb, *in.Timeout)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sandboxes[id]
	if s == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox \"%s\" not found", id))
		return
	}
	extend := func() {
		s.EndAt = time.Now().UTC().Add(time.Duration(*in.Timeout) * time.Second).Format(time.RFC3339)
	}
	switch verb {
	case "pause":
		if s.State != "running" {
			writeError(w, http.StatusConflict, fmt.Sprintf("sandbox \"%s\" is %s, not running", id, s.State))
			return
		}
		s.State = "paused"
		w.WriteHeader(http.StatusNoContent)
	case "resume":
		if s.State != "paused" {
			writeError(w, http.StatusConflict, fmt.Sprintf("sandbox \"%s\" is already running", id))
			return
		}
		s.State = "running"
		s.autoPause = in.AutoPause != nil && *in.AutoPause
		extend()
		writeJSON(w, http.StatusCreated, f.createdLocked(s))
	case "connect":
		status := http.StatusOK
		if s.State == "paused" {
			s.State, status = "running", http.StatusCreated
		}
		extend()
		writeJSON(w, status, f.createdLocked(s))
	case "timeout":
		extend()
		w.WriteHeader(http.StatusNoContent)
	}
}

// newID returns a sandbox ID in E2B's form: 20 characters of [a-z0-9].
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
