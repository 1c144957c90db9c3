package hearth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

func apiClient(f *hearthtest.FakeAPI) *hearth.Client {
	return hearth.NewClient(hearth.WithAPIURL(f.URL+"/"), hearth.WithAPIKey(f.APIKey), hearth.WithSandboxURL("http://127.0.0.1:1"))
}

// jsonEqual compares a request body with the JSON the contract expects, ignoring key order.
func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("body %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
}

func TestCreateRequestBody(t *testing.T) {
	tests := []struct {
		name string
		opts hearth.CreateOptions
		want string
	}{
		{name: "defaults", want: `{"templateID":"base","timeout":300,"autoPause":false,"secure":true,"allow_internet_access":true}`},
		{
			name: "everything",
			opts: hearth.CreateOptions{
				Template: "base", Timeout: 90 * time.Second, Metadata: map[string]string{"owner": "ci"},
				Envs: map[string]string{"A": "1"}, AutoPause: true, Secure: hearth.Bool(false), AllowInternetAccess: hearth.Bool(false),
				Network: &hearth.NetworkOptions{AllowOut: []string{"1.1.1.1"}, DenyOut: []string{"0.0.0.0/0"}, AllowPublicTraffic: hearth.Bool(false)},
			},
			want: `{"templateID":"base","timeout":90,"metadata":{"owner":"ci"},"envVars":{"A":"1"},"autoPause":true,"secure":false,"allow_internet_access":false,` +
				`"network":{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"],"allowPublicTraffic":false}}`,
		},
		{name: "sub-second timeout rounds up", opts: hearth.CreateOptions{Timeout: 1500 * time.Millisecond},
			want: `{"templateID":"base","timeout":2,"autoPause":false,"secure":true,"allow_internet_access":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := hearthtest.NewFakeAPI(t)
			f.EnvdAccessToken = "envd-token"
			sb, err := apiClient(f).Create(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, f.LastBody(), tt.want)
			info := sb.Info()
			if len(sb.ID) != 20 || info.SandboxID != sb.ID || info.EnvdVersion != hearthtest.FakeEnvdVersion || info.Alias != "base" || info.ClientID == "" {
				t.Errorf("created sandbox = %+v", info)
			}
			// Every sandbox gets a token, whatever secure says.
			if info.EnvdAccessToken != "envd-token" {
				t.Errorf("envdAccessToken = %q, want %q", info.EnvdAccessToken, "envd-token")
			}
			if f.State(sb.ID) != "running" {
				t.Errorf("sandbox state %q after create", f.State(sb.ID))
			}
		})
	}
}

func TestLifecycleCallsAndErrors(t *testing.T) {
	ctx := context.Background()
	f := hearthtest.NewFakeAPI(t)
	c := apiClient(f)
	running := f.AddSandbox("running0000000000000", "running", nil)
	paused := f.AddSandbox("paused00000000000000", "paused", nil)
	frozen := f.AddSandbox("frozen00000000000000", "paused", nil) // stays paused throughout
	const missing = "missing0000000000000"

	tests := []struct {
		name      string
		call      func() error
		wantCall  string
		wantBody  string
		wantErr   func(error) bool
		wantState map[string]string
	}{
		{name: "pause running", call: func() error { return c.Pause(ctx, running) }, wantCall: "POST /sandboxes/" + running + "/pause",
			wantState: map[string]string{running: "paused"}},
		{name: "pause paused conflicts", call: func() error { return c.Pause(ctx, running) }, wantErr: hearth.IsConflict},
		{name: "pause missing", call: func() error { return c.Pause(ctx, missing) }, wantErr: hearth.IsNotFound},
		{name: "resume paused", call: func() error {
			sb, err := c.Resume(ctx, running, hearth.ResumeOptions{Timeout: time.Minute, AutoPause: true})
			if err == nil && sb.ID != running {
				return errors.New("resumed handle has ID " + sb.ID)
			}
			return err
		}, wantCall: "POST /sandboxes/" + running + "/resume", wantBody: `{"timeout":60,"autoPause":true}`,
			wantState: map[string]string{running: "running"}},
		{name: "resume running conflicts", call: func() error { _, err := c.Resume(ctx, running, hearth.ResumeOptions{}); return err },
			wantBody: `{"timeout":300,"autoPause":false}`, wantErr: hearth.IsConflict},
		{name: "connect running", call: func() error { return connectWant(c, running, false) },
			wantCall: "POST /sandboxes/" + running + "/connect", wantBody: `{"timeout":120}`},
		{name: "connect paused resumes", call: func() error { return connectWant(c, paused, true) },
			wantBody: `{"timeout":120}`, wantState: map[string]string{paused: "running"}},
		{name: "connect missing", call: func() error { _, _, err := c.Connect(ctx, missing, 0); return err }, wantErr: hearth.IsNotFound},
		{name: "set timeout", call: func() error { return c.SetTimeout(ctx, running, 45*time.Second) },
			wantCall: "POST /sandboxes/" + running + "/timeout", wantBody: `{"timeout":45}`},
		{name: "get missing", call: func() error { _, err := c.GetSandbox(ctx, missing); return err }, wantErr: hearth.IsNotFound},
		{name: "update network", call: func() error {
			return c.UpdateNetwork(ctx, running, hearth.NetworkUpdate{DenyOut: []string{"0.0.0.0/0"}, AllowOut: []string{"1.1.1.1"}})
		}, wantCall: "PUT /sandboxes/" + running + "/network", wantBody: `{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"]}`},
		{name: "update network to no internet", call: func() error {
			return c.UpdateNetwork(ctx, running, hearth.NetworkUpdate{AllowInternetAccess: hearth.Bool(false)})
		}, wantBody: `{"allow_internet_access":false}`},
		{name: "fork", call: func() error {
			res, err := c.Fork(ctx, running, hearth.ForkOptions{Count: 2, Timeout: time.Minute})
			if err == nil && (len(res) != 2 || res[0].Err != nil || res[0].Sandbox == nil || res[0].Sandbox.ID == running) {
				return errors.New("fork did not return two new sandboxes")
			}
			return err
		}, wantCall: "POST /sandboxes/" + running + "/fork", wantBody: `{"timeout":60,"count":2}`},
		{name: "fork paused conflicts", call: func() error { _, err := c.Fork(ctx, frozen, hearth.ForkOptions{}); return err },
			wantBody: `{"timeout":300,"count":1}`, wantErr: hearth.IsConflict},
		{name: "update network missing", call: func() error { return c.UpdateNetwork(ctx, missing, hearth.NetworkUpdate{}) }, wantErr: hearth.IsNotFound},
		{name: "kill", call: func() error { return c.Kill(ctx, paused) }, wantCall: "DELETE /sandboxes/" + paused,
			wantState: map[string]string{paused: ""}},
		{name: "kill again", call: func() error { return c.Kill(ctx, paused) }, wantErr: hearth.IsNotFound},
		{name: "wrong key", call: func() error {
			_, err := hearth.NewClient(hearth.WithAPIURL(f.URL), hearth.WithAPIKey("e2b_bad")).GetSandbox(ctx, running)
			return err
		}, wantErr: hearth.IsUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.Calls())
			err := tt.call()
			if tt.wantErr == nil && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != nil {
				var ae *hearth.APIError
				if !tt.wantErr(err) || !errors.As(err, &ae) || ae.Message == "" || !strings.Contains(err.Error(), ae.Message) {
					t.Fatalf("err = %v, want a typed API error carrying the server's message", err)
				}
			}
			calls := f.Calls()
			if len(calls) != before+1 {
				t.Fatalf("made %d requests, want 1: %v", len(calls)-before, calls[before:])
			}
			if tt.wantCall != "" && calls[before] != tt.wantCall {
				t.Errorf("request %q, want %q", calls[before], tt.wantCall)
			}
			if tt.wantBody != "" {
				jsonEqual(t, f.LastBody(), tt.wantBody)
			}
			for id, st := range tt.wantState {
				if got := f.State(id); got != st {
					t.Errorf("state of %s = %q, want %q", id, got, st)
				}
			}
		})
	}
}

func connectWant(c *hearth.Client, id string, wantResumed bool) error {
	sb, resumed, err := c.Connect(context.Background(), id, 2*time.Minute)
	if err != nil {
		return err
	}
	if resumed != wantResumed || sb.ID != id {
		return errors.New("connect: wrong resumed flag or ID")
	}
	return nil
}

func TestGetSandboxDecodes(t *testing.T) {
	f := hearthtest.NewFakeAPI(t)
	f.EnvdAccessToken = "tok"
	c := apiClient(f)
	ctx := context.Background()
	sb, err := c.Create(ctx, hearth.CreateOptions{Metadata: map[string]string{"k": "v"}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.GetSandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.SandboxID != sb.ID || info.State != hearth.StateRunning || info.Metadata["k"] != "v" || info.EnvdAccessToken != "tok" ||
		info.CPUCount != 2 || info.MemoryMB != 512 || info.DiskSizeMB != 1024 || info.TemplateID == "" || info.EnvdVersion == "" {
		t.Errorf("GetSandbox = %+v", info)
	}
	if d := info.EndAt.Sub(info.StartedAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("endAt - startedAt = %v, want the 1 h timeout", d)
	}
	if !info.AllowInternet || info.Network == nil {
		t.Errorf("GetSandbox network: internet %v, network %+v", info.AllowInternet, info.Network)
	}
	opened, err := c.Open(ctx, sb.ID)
	if err != nil || opened.State() != hearth.StateRunning || opened.Info().EnvdAccessToken != "tok" {
		t.Fatalf("Open = %+v, %v", opened, err)
	}
}

func TestListSandboxesPagesAndFilters(t *testing.T) {
	f := hearthtest.NewFakeAPI(t)
	c := apiClient(f)
	ctx := context.Background()
	odd := map[string]string{"team": "a b=c&d%", "role": "x"}
	for i, st := range []string{"running", "paused", "running", "running", "paused"} {
		md := map[string]string{"n": string(rune('0' + i))}
		if i%2 == 1 {
			md = odd
		}
		f.AddSandbox("sbx"+strings.Repeat(string(rune('a'+i)), 17), st, md)
	}
	tests := []struct {
		name      string
		opts      hearth.ListOptions
		wantPages []int
		wantQuery string
	}{
		{name: "all in pages of 2", opts: hearth.ListOptions{Limit: 2}, wantPages: []int{2, 2, 1}},
		{name: "running", opts: hearth.ListOptions{States: []hearth.SandboxState{hearth.StateRunning}}, wantPages: []int{3}},
		{name: "both states", opts: hearth.ListOptions{States: []hearth.SandboxState{hearth.StateRunning, hearth.StatePaused}}, wantPages: []int{5}},
		{name: "metadata with reserved characters", opts: hearth.ListOptions{Metadata: odd}, wantPages: []int{2}},
		{name: "metadata and state", opts: hearth.ListOptions{Metadata: map[string]string{"role": "x"}, States: []hearth.SandboxState{hearth.StatePaused}}, wantPages: []int{1}},
		{name: "no match", opts: hearth.ListOptions{Metadata: map[string]string{"role": "y"}}, wantPages: []int{0}},
		{name: "resume from a token", opts: hearth.ListOptions{Limit: 2, NextToken: "page-4"}, wantPages: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := c.ListSandboxes(tt.opts)
			var sizes []int
			for p.HasNext() {
				page, err := p.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range page {
					if tt.opts.Metadata != nil && !reflect.DeepEqual(s.Metadata, odd) && s.Metadata["role"] != "x" {
						t.Errorf("sandbox %s with metadata %v does not match the filter", s.SandboxID, s.Metadata)
					}
					if s.StartedAt.IsZero() || s.State == "" {
						t.Errorf("listed sandbox lacks fields: %+v", s)
					}
				}
				sizes = append(sizes, len(page))
			}
			if !reflect.DeepEqual(sizes, tt.wantPages) {
				t.Errorf("page sizes %v, want %v", sizes, tt.wantPages)
			}
			n := 0
			for s, err := range c.ListSandboxes(tt.opts).All(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				_ = s
				n++
			}
			want := 0
			for _, s := range tt.wantPages {
				want += s
			}
			if n != want {
				t.Errorf("All yielded %d sandboxes, want %d", n, want)
			}
		})
	}
}

func TestListTemplates(t *testing.T) {
	f := hearthtest.NewFakeAPI(t)
	f.AddTemplate("tpl2", "python", "py")
	got, err := apiClient(f).ListTemplates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].TemplateID != "tpl2" || !reflect.DeepEqual(got[1].Aliases, []string{"python", "py"}) ||
		got[0].BuildStatus != "ready" || got[0].CreatedAt.IsZero() || got[0].EnvdVersion == "" || got[0].MemoryMB == 0 {
		t.Fatalf("ListTemplates = %+v", got)
	}
}

// Error bodies that are not E2B's JSON shape still give a useful message.
func TestAPIErrorBodies(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		status            int
		wantMsg           string
	}{
		{name: "json", ctype: "application/json", body: `{"code":409,"message":"sandbox is pausing"}`, status: 409, wantMsg: "sandbox is pausing"},
		{name: "text", ctype: "text/plain", body: "upstream down\n", status: 502, wantMsg: "upstream down"},
		{name: "empty", status: 500, wantMsg: "internal server error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.ctype != "" {
					w.Header().Set("Content-Type", tt.ctype)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			err := hearth.NewClient(hearth.WithAPIURL(srv.URL)).Pause(context.Background(), "x")
			var ae *hearth.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Message != tt.wantMsg || ae.Op != "pause sandbox x" {
				t.Fatalf("err = %#v, want status %d message %q", err, tt.status, tt.wantMsg)
			}
		})
	}
}

func TestNewClientEnvironment(t *testing.T) {
	tests := []struct {
		name             string
		env              map[string]string
		opts             []hearth.Option
		api, sbx, apiKey string
	}{
		{name: "defaults", api: "http://localhost:3000", sbx: "http://localhost:3002"},
		{name: "e2b variables", env: map[string]string{"E2B_API_URL": "http://e:1", "E2B_SANDBOX_URL": "http://e:2", "E2B_API_KEY": "e2b_1"},
			api: "http://e:1", sbx: "http://e:2", apiKey: "e2b_1"},
		{name: "hearth variables win", env: map[string]string{"E2B_API_URL": "http://e:1", "HEARTH_API_URL": "http://h:1",
			"E2B_SANDBOX_URL": "http://e:2", "HEARTH_SANDBOX_URL": "http://h:2", "E2B_API_KEY": "e2b_1", "HEARTH_API_KEY": "e2b_2"},
			api: "http://h:1", sbx: "http://h:2", apiKey: "e2b_2"},
		{name: "options win", env: map[string]string{"HEARTH_API_URL": "http://h:1", "HEARTH_API_KEY": "e2b_2"},
			opts: []hearth.Option{hearth.WithAPIURL("http://o:1"), hearth.WithAPIKey("e2b_3")},
			api:  "http://o:1", sbx: "http://localhost:3002", apiKey: "e2b_3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "HEARTH_API_URL", "HEARTH_SANDBOX_URL", "HEARTH_API_KEY"} {
				t.Setenv(k, tt.env[k])
			}
			c := hearth.NewClient(tt.opts...)
			if c.APIURL != tt.api || c.SandboxURL != tt.sbx || c.APIKey != tt.apiKey {
				t.Errorf("client = %s %s %q, want %s %s %q", c.APIURL, c.SandboxURL, c.APIKey, tt.api, tt.sbx, tt.apiKey)
			}
		})
	}
}
