package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// apiRoutes are the REST paths the dashboard's pages may reach through the passthrough.
// Agent routes (heartbeats) and anything added later stay out unless listed here.
var apiRoutes = []string{"/sandboxes", "/v2/sandboxes", "/templates", "/api-keys"}

func allowedAPIPath(p string) bool {
	for _, r := range apiRoutes {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// passthrough serves /dashboard/api/<REST path> with the REST handler, as the signed-in key:
// the pages use the REST API as it is, and its team checks apply unchanged.
func (h *Handler) passthrough(w http.ResponseWriter, r *http.Request, key string) {
	rest := strings.TrimPrefix(r.URL.Path, Prefix+"api")
	if !allowedAPIPath(rest) {
		jsonError(w, http.StatusNotFound, "the dashboard does not pass "+rest+" to the API")
		return
	}
	in := r.Clone(r.Context())
	in.URL.Path = rest
	in.URL.RawPath = ""
	in.RequestURI = ""
	in.Header.Del("Cookie") // the key goes in X-API-Key; nothing else of the session leaks on
	in.Header.Del(csrfHeader)
	in.Header.Set("X-API-Key", key)
	h.api.ServeHTTP(w, in)
}

// apiResult is a REST response read in full.
type apiResult struct {
	status int
	body   []byte
}

// message is the API's error message, or the status text.
func (a apiResult) message() string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(a.body, &e) == nil && e.Message != "" {
		return e.Message
	}
	return http.StatusText(a.status)
}

// call runs one REST request in-process as key, on behalf of the browser request r (whose
// source address the API's rate limit of invalid keys counts).
func (h *Handler) call(r *http.Request, key, method, path string, body any) apiResult {
	return h.callCtx(r.Context(), r.RemoteAddr, key, method, path, body)
}

func (h *Handler) callCtx(ctx context.Context, remote, key, method, path string, body any) apiResult {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{status: http.StatusInternalServerError, body: errorBody(err.Error())}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hearth.internal"+path, rd)
	if err != nil {
		return apiResult{status: http.StatusInternalServerError, body: errorBody(err.Error())}
	}
	req.RemoteAddr = remote
	req.Header.Set("X-API-Key", key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}}
	h.api.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return apiResult{status: rec.status, body: rec.buf.Bytes()}
}

// recorder collects a response from an in-process handler.
type recorder struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.buf.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]any{"message": msg})
	return b
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": status, "message": msg})
}

// sandboxDetail is what the dashboard reads of GET /sandboxes/{id}.
type sandboxDetail struct {
	SandboxID       string `json:"sandboxID"`
	State           string `json:"state"`
	EnvdAccessToken string `json:"envdAccessToken"`
}

// sandboxOf reads a sandbox as key; an error carries the API's status for the browser.
func (h *Handler) sandboxOf(ctx context.Context, remote, key, id string) (sandboxDetail, *statusError) {
	res := h.callCtx(ctx, remote, key, http.MethodGet, "/sandboxes/"+pathEscape(id), nil)
	if res.status != http.StatusOK {
		return sandboxDetail{}, &statusError{res.status, res.message()}
	}
	var d sandboxDetail
	if err := json.Unmarshal(res.body, &d); err != nil {
		return sandboxDetail{}, &statusError{http.StatusBadGateway, fmt.Sprintf("read sandbox %s: %v", id, err)}
	}
	return d, nil
}

type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }
