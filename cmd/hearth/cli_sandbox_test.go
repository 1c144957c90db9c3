package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSandboxLifecycleCommands(t *testing.T) {
	e := newCLIEnv(t, false)
	running := e.api.AddSandbox("run00000000000000001", "running", map[string]string{"team": "a"})
	paused := e.api.AddSandbox("pau00000000000000001", "paused", map[string]string{"team": "b"})
	frozen := e.api.AddSandbox("fro00000000000000001", "paused", nil) // stays paused throughout
	const missing = "nope0000000000000000"
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderr    string
		wantState map[string]string
	}{
		{name: "pause", args: []string{"sandbox", "pause", running}, wantState: map[string]string{running: "paused"}},
		{name: "pause paused", args: []string{"sandbox", "pause", running}, code: 4, stderr: "hearth sandbox pause: pause sandbox " + running + `: sandbox "` + running + `" is paused, not running (HTTP 409)`},
		{name: "pause missing", args: []string{"sandbox", "pause", missing}, code: 3, stderr: "not found (HTTP 404)"},
		{name: "resume", args: []string{"sandbox", "resume", running, "--timeout", "10m"}, wantState: map[string]string{running: "running"}},
		{name: "resume running", args: []string{"sandbox", "resume", running}, code: 4, stderr: "already running"},
		{name: "resume json", args: []string{"sandbox", "resume", paused, "--json"}, stdout: `"sandboxID": "` + paused + `"`},
		{name: "network", args: []string{"sandbox", "network", running, "--no-internet", "--allow-out", "1.1.1.1"}},
		{name: "network missing", args: []string{"sandbox", "network", missing}, code: 3, stderr: "not found (HTTP 404)"},
		{name: "fork paused", args: []string{"sandbox", "fork", frozen}, code: 4, stderr: "only a running sandbox can be forked"},
		{name: "fork bad count", args: []string{"sandbox", "fork", running, "--count", "0"}, code: 2, stderr: "--count 0: want 1 to 100"},
		{name: "fork", args: []string{"sandbox", "fork", running, "--count", "2", "--timeout", "2m"}},
		{name: "kill", args: []string{"sandbox", "kill", paused}, wantState: map[string]string{paused: ""}},
		{name: "kill missing", args: []string{"sandbox", "kill", paused}, code: 3, stderr: "hearth sandbox kill: "},
		{name: "no ID", args: []string{"sandbox", "pause"}, code: 2, stderr: "accepts 1 arg(s), received 0"},
		{name: "unknown flag", args: []string{"sandbox", "kill", running, "--force"}, code: 2, stderr: "unknown flag: --force"},
		{name: "unknown subcommand", args: []string{"sandbox", "explode"}, code: 2, stderr: `unknown command "explode"`},
		{name: "bad timeout", args: []string{"sandbox", "resume", running, "--timeout", "soon"}, code: 2, stderr: "invalid argument"},
		{name: "wrong key", args: []string{"sandbox", "kill", running, "--api-key", "e2b_bad"}, code: 1, stderr: "Invalid API key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", tt.args...)
			r.expect(t, tt.code, tt.stdout, tt.stderr)
			for id, st := range tt.wantState {
				if got := e.api.State(id); got != st {
					t.Errorf("state of %s = %q, want %q", id, got, st)
				}
			}
		})
	}
}

func TestSandboxCreateCommand(t *testing.T) {
	e := newCLIEnv(t, false)
	tests := []struct {
		name     string
		args     []string
		code     int
		wantBody string
		stderr   string
	}{
		{name: "defaults", args: []string{"sandbox", "create"},
			wantBody: `{"templateID":"base","timeout":300,"autoPause":false,"secure":true,"allow_internet_access":true}`},
		{name: "flags", args: []string{"sandbox", "create", "--template", "base", "--timeout", "90s", "--metadata", "owner=ci", "--metadata", "run=7",
			"--env", "A=1=2", "--auto-pause"},
			wantBody: `{"templateID":"base","timeout":90,"metadata":{"owner":"ci","run":"7"},"envVars":{"A":"1=2"},"autoPause":true,"secure":true,"allow_internet_access":true}`},
		{name: "outbound policy", args: []string{"sandbox", "create", "--no-internet", "--allow-out", "1.1.1.1", "--deny-out", "8.8.8.0/24"},
			wantBody: `{"templateID":"base","timeout":300,"autoPause":false,"secure":true,"allow_internet_access":false,"network":{"allowOut":["1.1.1.1"],"denyOut":["8.8.8.0/24"]}}`},
		{name: "unknown template", args: []string{"sandbox", "create", "--template", "nope"}, code: 3, stderr: "template 'nope' not found"},
		{name: "bad metadata", args: []string{"sandbox", "create", "--metadata", "novalue"}, code: 2, stderr: `--metadata "novalue": want KEY=VALUE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", tt.args...)
			r.expect(t, tt.code, "", tt.stderr)
			if tt.code != 0 {
				return
			}
			id := strings.TrimSpace(r.stdout)
			if len(id) != 20 || e.api.State(id) != "running" {
				t.Fatalf("create printed %q, not the ID of a running sandbox", r.stdout)
			}
			var got, want any
			_ = json.Unmarshal([]byte(e.api.LastBody()), &got)
			_ = json.Unmarshal([]byte(tt.wantBody), &want)
			if b1, b2 := mustJSON(got), mustJSON(want); b1 != b2 {
				t.Errorf("request body %s, want %s", b1, b2)
			}
		})
	}
	r := runCLI(t, "", "sandbox", "create", "--json")
	var created map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created["sandboxID"] == "" || created["envdVersion"] != "0.6.4" {
		t.Errorf("create --json printed %q (%v)", r.stdout, err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestSandboxLsCommand(t *testing.T) {
	e := newCLIEnv(t, false)
	for i := 0; i < 3; i++ {
		e.api.AddSandbox("run0000000000000000"+string(rune('a'+i)), "running", map[string]string{"team": "a"})
	}
	e.api.AddSandbox("pau0000000000000000a", "paused", map[string]string{"team": "b"})
	tests := []struct {
		name    string
		args    []string
		code    int
		wantIDs []string
		stderr  string
	}{
		{name: "all", args: []string{"sandbox", "ls"}, wantIDs: []string{"run0000000000000000a", "run0000000000000000b", "run0000000000000000c", "pau0000000000000000a"}},
		{name: "paused", args: []string{"sandbox", "ls", "--state", "paused"}, wantIDs: []string{"pau0000000000000000a"}},
		{name: "metadata", args: []string{"sandbox", "ls", "--metadata", "team=b"}, wantIDs: []string{"pau0000000000000000a"}},
		{name: "bad state", args: []string{"sandbox", "ls", "--state", "stopped"}, code: 2, stderr: `--state "stopped": want running, paused or lost`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", tt.args...)
			r.expect(t, tt.code, "", tt.stderr)
			if tt.code != 0 {
				return
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if !strings.HasPrefix(lines[0], "ID ") || len(lines) != len(tt.wantIDs)+1 {
				t.Fatalf("table:\n%s\nwant a header and %d rows", r.stdout, len(tt.wantIDs))
			}
			for i, id := range tt.wantIDs {
				if !strings.HasPrefix(lines[i+1], id+" ") {
					t.Errorf("row %d = %q, want sandbox %s", i+1, lines[i+1], id)
				}
			}
			j := runCLI(t, "", append(tt.args, "--json")...)
			var listed []struct {
				SandboxID string            `json:"sandboxID"`
				State     string            `json:"state"`
				Metadata  map[string]string `json:"metadata"`
			}
			if err := json.Unmarshal([]byte(j.stdout), &listed); err != nil || len(listed) != len(tt.wantIDs) {
				t.Fatalf("--json printed %q (%v)", j.stdout, err)
			}
		})
	}
}

func TestTemplateLsCommand(t *testing.T) {
	e := newCLIEnv(t, false)
	e.api.AddTemplate("tplpython0000000000", "python", "py")
	r := runCLI(t, "", "template", "ls")
	r.expect(t, 0, "tplpython0000000000   python,py  ready", "")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Errorf("template ls:\n%s\nwant a header and two rows", r.stdout)
	}
	j := runCLI(t, "", "template", "ls", "--json")
	var tmpls []map[string]any
	if err := json.Unmarshal([]byte(j.stdout), &tmpls); err != nil || len(tmpls) != 2 || tmpls[1]["templateID"] != "tplpython0000000000" {
		t.Errorf("template ls --json printed %q (%v)", j.stdout, err)
	}
}

// Without a key from flags or the environment, the CLI reads the one hearth dev saved, and
// says what to do when there is none.
func TestAPIKeyResolution(t *testing.T) {
	e := newCLIEnv(t, false)
	id := e.api.AddSandbox("run00000000000000001", "running", nil)
	t.Setenv("HEARTH_API_KEY", "")
	dataDir := t.TempDir()
	t.Setenv("HEARTH_DATA_DIR", dataDir)

	r := runCLI(t, "", "sandbox", "pause", id)
	r.expect(t, 2, "", "no API key: pass --api-key or set HEARTH_API_KEY")
	if !strings.Contains(r.stderr, filepath.Join(dataDir, "api-key")) {
		t.Errorf("error %q does not say where hearth dev saves the key", r.stderr)
	}

	if err := os.WriteFile(filepath.Join(dataDir, "api-key"), []byte(e.api.APIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "sandbox", "pause", id).expect(t, 0, "", "")

	t.Setenv("E2B_API_KEY", "e2b_wrong") // the environment wins over the file
	runCLI(t, "", "sandbox", "resume", id).expect(t, 1, "", "Invalid API key")
	runCLI(t, "", "sandbox", "resume", id, "--api-key", e.api.APIKey).expect(t, 0, "", "") // and the flag over both
}

// TestSandboxURLCommand: the URL to open a sandbox port by; without a sandbox domain it is
// the path form on the sandbox URL.
func TestSandboxURLCommand(t *testing.T) {
	e := newCLIEnv(t, false) // HEARTH_SANDBOX_URL is http://127.0.0.1:1
	running := e.api.AddSandbox("run00000000000000002", "running", nil)
	paused := e.api.AddSandbox("pau00000000000000002", "paused", nil)
	runCLI(t, "", "sandbox", "url", running, "8000").expect(t, 0, "http://127.0.0.1:1/proxy/"+running+"/8000/\n", "")
	runCLI(t, "", "sandbox", "url", running, "http").expect(t, 2, "", `PORT "http": want a TCP port`)
	runCLI(t, "", "sandbox", "url", running, "0").expect(t, 2, "", "want a TCP port")
	runCLI(t, "", "sandbox", "url", paused, "8000").expect(t, 4, "", "sandbox is paused")
}
