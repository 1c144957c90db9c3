package cp

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// FuzzCreateSandboxBody: any body a client posts to POST /sandboxes either passes the
// checks that run before anything is stored or is refused with a 4xx naming the problem;
// nothing panics and nothing is a 5xx.
func FuzzCreateSandboxBody(f *testing.F) {
	f.Add([]byte(`{"templateID":"base","timeout":300,"metadata":{"a":"b"},"envVars":{"X":"1"}}`))
	f.Add([]byte(`{"templateID":"../etc","timeout":9223372037}`))
	f.Add([]byte(`{"templateID":"base","allow_internet_access":false,"network":{"allowOut":["1.2.3.4/32","*.example.com"],"denyOut":["0.0.0.0/0"]}}`))
	f.Add([]byte(`{"templateID":"base","network":{"allowOut":["::1"],"maskRequestHost":"x"}}`))
	f.Add([]byte(`{"templateID":"base","autoPause":true,"autoResume":{"enabled":true},"mcp":{}}`))
	f.Add([]byte(`[`))
	s := &Server{cfg: Config{DefaultTimeout: 15 * time.Second, MaxTimeout: 24 * time.Hour}}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/sandboxes", bytes.NewReader(body))
		var req api.NewSandbox
		err := decode(r, &req)
		if err == nil && req.TemplateID != "" {
			err = checkTemplateName("templateID", req.TemplateID)
		}
		if err == nil {
			var ttl time.Duration
			if ttl, err = s.timeoutFor(req.Timeout); err == nil && (ttl <= 0 || ttl > 24*time.Hour) {
				t.Fatalf("timeout %v accepted for %v", ttl, req.Timeout)
			}
		}
		if err == nil {
			_, err = checkNetwork(req)
		}
		if err == nil {
			return
		}
		var he *httpError
		if !errors.As(err, &he) || he.status < 400 || he.status > 499 || he.msg == "" {
			t.Fatalf("refusal %v is not a 4xx with a message", err)
		}
	})
}
