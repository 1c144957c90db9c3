package cp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/hostreg"
)

// diskAgent answers Create as an agent does: a request without a disk size gets the agent's
// default.
type diskAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	defaultMiB uint32
	got        chan uint32
}

func (a *diskAgent) Create(_ context.Context, req *connect.Request[pb.CreateRequest]) (*connect.Response[pb.CreateResponse], error) {
	d := req.Msg.GetDiskMib()
	a.got <- d
	if d == 0 {
		d = a.defaultMiB
	}
	return connect.NewResponse(&pb.CreateResponse{Sandbox: &pb.Sandbox{
		SandboxId: req.Msg.GetSandboxId(), State: pb.State_STATE_RUNNING, DiskMib: d, EnvdVersion: "0.6.4",
	}}), nil
}

// TestDiskSizeReported: a template's disk size comes with the agents' heartbeats; a sandbox's
// is its template's, sent to the agent with the create, or else the agent's default, and is
// reported as diskSizeMB by GET /sandboxes/{id} and the lists.
func TestDiskSizeReported(t *testing.T) {
	for _, tc := range []struct {
		name               string
		templateMiB        int
		wantSent, wantSize uint32
	}{
		{"agent default", 0, 0, 10240},
		{"template size", 512, 512, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := &diskAgent{defaultMiB: 10240, got: make(chan uint32, 1)}
			_, h := hostagentv1connect.NewHostAgentServiceHandler(agent)
			rpc := httptest.NewUnstartedServer(h)
			rpc.Config.Protocols = new(http.Protocols)
			rpc.Config.Protocols.SetUnencryptedHTTP2(true)
			rpc.Start()
			t.Cleanup(rpc.Close)

			_, hs, _ := newTestCP(t)
			hb := hostreg.Heartbeat{RPCAddr: strings.TrimPrefix(rpc.URL, "http://"), ProxyAddr: "127.0.0.1:2", Runtime: "gvisor", CPUs: 2,
				MemoryTotalMiB: 4096, Templates: []hostreg.Template{{Name: "base", Version: "v1", EnvdVersion: "0.6.4", DiskMiB: tc.templateMiB}}}
			b, _ := json.Marshal(hb)
			if status, body, _ := call(t, "POST", hs.URL+hostreg.Path("h1"), string(b), map[string]string{"Authorization": "Bearer " + testAgentToken}); status != http.StatusOK {
				t.Fatalf("heartbeat: %d %s", status, body)
			}

			key := map[string]string{"X-API-Key": testKey}
			status, body, _ := call(t, "POST", hs.URL+"/sandboxes", `{"templateID":"base"}`, key)
			if status != http.StatusCreated {
				t.Fatalf("create: %d %s", status, body)
			}
			if got := <-agent.got; got != tc.wantSent {
				t.Errorf("agent got disk_mib %d, want %d", got, tc.wantSent)
			}
			var created struct{ SandboxID string }
			_ = json.Unmarshal([]byte(body), &created)
			status, body, _ = call(t, "GET", hs.URL+"/templates/base", "", key)
			if want := `"diskSizeMB":` + strconv.Itoa(tc.templateMiB); status != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("GET /templates/base: %d %s; want %s", status, body, want)
			}
			want := `"diskSizeMB":` + strconv.Itoa(int(tc.wantSize))
			for _, path := range []string{"/sandboxes/" + created.SandboxID, "/sandboxes", "/v2/sandboxes"} {
				status, body, _ := call(t, "GET", hs.URL+path, "", key)
				if status != http.StatusOK || !strings.Contains(body, want) {
					t.Errorf("GET %s: %d %s; want %s", path, status, body, want)
				}
			}
		})
	}
}
