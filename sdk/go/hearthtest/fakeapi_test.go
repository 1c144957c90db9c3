package hearthtest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// recorder is a testing.TB that records the fake's contract violations instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// The fake rejects requests the contract does not allow, so client drift fails tests.
func TestFakeAPIRejectsOffContractRequests(t *testing.T) {
	tests := []struct {
		name, method, path, ctype, body string
		wantStatus                      int
		wantViolation                   string
	}{
		{name: "valid create", method: "POST", path: "/sandboxes", ctype: "application/json", body: `{"templateID":"base","timeout":5}`, wantStatus: 201},
		{name: "unknown body field", method: "POST", path: "/sandboxes", ctype: "application/json", body: `{"templateID":"base","timeout":5,"timeoutMs":5000}`, wantStatus: 400, wantViolation: "unknown field"},
		{name: "missing timeout", method: "POST", path: "/sandboxes", ctype: "application/json", body: `{"templateID":"base"}`, wantStatus: 400, wantViolation: `"timeout"`},
		{name: "wrong content type", method: "POST", path: "/sandboxes", ctype: "text/plain", body: `{"templateID":"base","timeout":5}`, wantStatus: 400, wantViolation: "Content-Type"},
		{name: "unknown query", method: "GET", path: "/v2/sandboxes?status=running", wantStatus: 400, wantViolation: "status"},
		{name: "bad state", method: "GET", path: "/v2/sandboxes?state=stopped", wantStatus: 400, wantViolation: "stopped"},
		{name: "body on pause", method: "POST", path: "/sandboxes/x/pause", ctype: "application/json", body: `{}`, wantStatus: 400, wantViolation: "pause"},
		{name: "v1 list", method: "GET", path: "/sandboxes", wantStatus: 400, wantViolation: "no route"},
		{name: "unknown template is a 404, not a violation", method: "POST", path: "/sandboxes", ctype: "application/json", body: `{"templateID":"nope","timeout":5}`, wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			f := NewFakeAPI(rec)
			req, _ := http.NewRequest(tt.method, f.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("X-API-Key", f.APIKey)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			joined := strings.Join(rec.errs, "\n")
			if tt.wantViolation == "" && joined != "" {
				t.Errorf("unexpected violation: %s", joined)
			}
			if tt.wantViolation != "" && !strings.Contains(joined, tt.wantViolation) {
				t.Errorf("violations %q, want one mentioning %q", joined, tt.wantViolation)
			}
		})
	}
}
