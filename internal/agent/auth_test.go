package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/hostreg"
)

var authCases = []struct {
	name  string
	token string // what the caller sends; "-" sends nothing
	ok    bool
}{
	{"no credential", "-", false},
	{"empty credential", "", false},
	{"wrong credential", "other-token", false},
	{"prefix of the token", "agent-tok", false},
	{"valid", "agent-token", true},
}

// TestRequireControlPlane: the agent API answers Connect's unauthenticated to every call
// without the agent token, before the handler runs.
func TestRequireControlPlane(t *testing.T) {
	path, h := hostagentv1connect.NewHostAgentServiceHandler(hostagentv1connect.UnimplementedHostAgentServiceHandler{})
	mux := http.NewServeMux()
	mux.Handle(path, RequireControlPlane("agent-token", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, tt := range authCases {
		t.Run(tt.name, func(t *testing.T) {
			c := hostagentv1connect.NewHostAgentServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(connect.UnaryInterceptorFunc(
				func(next connect.UnaryFunc) connect.UnaryFunc {
					return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
						if tt.token != "-" {
							req.Header().Set("Authorization", "Bearer "+tt.token)
						}
						return next(ctx, req)
					}
				})))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Fork(ctx, connect.NewRequest(&pb.ForkRequest{SandboxId: "victim"}))
			want := connect.CodeUnauthenticated
			if tt.ok {
				want = connect.CodeUnimplemented // reached the handler
			}
			if connect.CodeOf(err) != want {
				t.Fatalf("error %v, want code %v", err, want)
			}
		})
	}
	// An agent started without a token admits nobody.
	res := httptest.NewRecorder()
	req := httptest.NewRequest("POST", path+"Stats", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer ")
	RequireControlPlane("", h).ServeHTTP(res, req)
	if res.Code != http.StatusUnauthorized {
		t.Fatalf("empty token configured: %d, want 401", res.Code)
	}
}

// TestRequireControlPlaneProxy: the agent's proxy refuses traffic without the agent token
// before the proxy (and so any sandbox) sees it, and never forwards the token.
func TestRequireControlPlaneProxy(t *testing.T) {
	for _, tt := range authCases {
		t.Run(tt.name, func(t *testing.T) {
			reached := false
			h := RequireControlPlaneProxy("agent-token", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached = true
				if r.Header.Get(hostreg.ProxyAuthHeader) != "" {
					t.Error("the agent token was passed on towards the sandbox")
				}
			}))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("E2b-Sandbox-Id", "victim")
			req.Header.Set("E2b-Sandbox-Port", "49983")
			if tt.token != "-" {
				req.Header.Set(hostreg.ProxyAuthHeader, tt.token)
			}
			res := httptest.NewRecorder()
			h.ServeHTTP(res, req)
			if reached != tt.ok || (res.Code == http.StatusUnauthorized) == tt.ok {
				t.Fatalf("status %d, reached %v; want reached %v", res.Code, reached, tt.ok)
			}
		})
	}
}
