package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearthsh/hearth/internal/proxy"
	"github.com/hearthsh/hearth/internal/web"
	hearth "github.com/hearthsh/hearth/sdk/go"
	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

var envdBuild struct {
	once sync.Once
	path string
	err  error
}

// withEnvd serves a dashboard whose sandbox proxy is a real envd on this machine standing in
// for the team's sandbox (envd ignores the routing headers), over the control plane's API.
func withEnvd(t *testing.T) (*dashboard, *browser, *hearthtest.Envd) {
	t.Helper()
	envdBuild.once.Do(func() {
		dir := filepath.Join(os.TempDir(), "hearth-web-test-envd")
		if envdBuild.err = os.MkdirAll(dir, 0o755); envdBuild.err == nil {
			envdBuild.path, envdBuild.err = hearthtest.BuildEnvd(dir)
		}
	})
	if envdBuild.err != nil {
		t.Fatal(envdBuild.err)
	}
	e, err := hearthtest.StartEnvd(envdBuild.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	if err := e.Init(`{"accessToken":"` + testEnvdToken + `"}`); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.URL)
	d := newDashboard(t)
	// The real sandbox proxy, routing every sandbox to this envd: a plain ReverseProxy is no
	// stand-in, since without full duplex Go's server cuts streaming RPCs' request bodies
	// (the terminal's stream then ends with "incomplete envelope").
	envdProxy := proxy.New(func(*http.Request, proxy.Route) (proxy.Upstream, error) {
		return proxy.Upstream{Addr: u.Host}, nil
	}, proxy.Options{})
	d.srv.Config.Handler = web.New(web.Config{API: d.api, Proxy: envdProxy})
	b := d.browser(t)
	b.signin(d.keyMine)
	return d, b, e
}

// dialTerminal opens the terminal WebSocket as the page does.
func dialTerminal(t *testing.T, d *dashboard, b *browser, origin, token string, pid ...uint32) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	q := url.Values{"cols": {"100"}, "rows": {"30"}}
	for _, p := range pid {
		q.Set("pid", strconv.FormatUint(uint64(p), 10))
	}
	if token != "" {
		q.Set("csrf", token)
	}
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	u, _ := url.Parse(d.srv.URL)
	for _, c := range b.c.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/dashboard/"}) {
		hdr.Add("Cookie", c.Name+"="+c.Value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(d.srv.URL, "http")+"/dashboard/sbx/"+d.sandboxMine+"/terminal?"+q.Encode(),
		&websocket.DialOptions{HTTPHeader: hdr})
}

func TestTerminal(t *testing.T) {
	d, b, _ := withEnvd(t)
	tok := b.csrf()
	for _, c := range []struct{ name, origin, token string }{
		{"without CSRF token", d.srv.URL, ""},
		{"from another origin", "https://evil.example", tok},
	} {
		if conn, res, err := dialTerminal(t, d, b, c.origin, c.token); err == nil {
			conn.CloseNow()
			t.Errorf("terminal %s: connected, want refused", c.name)
		} else if res == nil || res.StatusCode != http.StatusForbidden {
			t.Errorf("terminal %s: %v, want 403", c.name, err)
		}
	}

	// Another team's key gets no terminal in this team's sandbox: the REST check says 404.
	stranger := d.browser(t)
	stranger.signin(d.keyOther)
	conn, _, err := dialTerminal(t, d, stranger, d.srv.URL, stranger.csrf())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err = conn.Read(ctx)
	if websocket.CloseStatus(err) != 4004 || !strings.Contains(err.Error(), "not found") {
		t.Errorf("another team's terminal: %v, want close 4004 not found", err)
	}
	conn.CloseNow()

	conn, _, err = dialTerminal(t, d, b, d.srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	resize, _ := json.Marshal(map[string]any{"type": "resize", "cols": 123, "rows": 40})
	if err := conn.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("echo $((6*7)); stty size\r")); err != nil {
		t.Fatal(err)
	}
	var screen strings.Builder
	for !strings.Contains(screen.String(), "42\r\n40 123") {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("terminal output %q, then: %v", screen.String(), err)
		}
		screen.Write(data)
	}
	// exit ends the shell: the page is told so, to start a new one.
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("exit\r")); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err = conn.Read(ctx); err != nil {
			break
		}
	}
	if got := websocket.CloseStatus(err); got != 4003 {
		t.Errorf("close after exit: %v (status %d), want 4003 shell exited", err, got)
	}
}

func TestFiles(t *testing.T) {
	d, b, _ := withEnvd(t)
	tok := b.csrf()
	dir := t.TempDir()
	hdr := map[string]string{"X-CSRF-Token": tok, "Content-Type": "application/octet-stream"}
	q := func(p string) string { return url.Values{"path": {p}}.Encode() }
	base := "/dashboard/sbx/" + d.sandboxMine + "/files"

	if res, body := b.do("POST", base+"/upload?"+q(dir+"/notes.txt"), "dropped in the browser", d.srv.URL, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("upload without token: %d %s, want 403", res.StatusCode, body)
	}
	if res, body := b.do("POST", base+"/upload?"+q(dir+"/notes.txt"), "dropped in the browser", d.srv.URL, hdr); res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	list := func() string {
		res, body := b.do("GET", base+"?"+q(dir), "", "", nil)
		if res.StatusCode != 200 {
			t.Fatalf("list: %d %s", res.StatusCode, body)
		}
		return body
	}
	if l := list(); !strings.Contains(l, `"name":"notes.txt"`) || !strings.Contains(l, `"size":22`) {
		t.Errorf("list after upload: %s", l)
	}
	res, body := b.do("GET", base+"/download?"+q(dir+"/notes.txt"), "", "", nil)
	if res.StatusCode != 200 || body != "dropped in the browser" {
		t.Errorf("download: %d %q", res.StatusCode, body)
	}
	if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || res.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("download headers %v: a sandbox's file must never render in the dashboard's origin", res.Header)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", base + "/download?" + q(dir+"/missing"), http.StatusNotFound},
		{"GET", base + "?" + q("relative/dir"), http.StatusBadRequest},
		{"GET", base + "?path=", http.StatusBadRequest},
		{"DELETE", base + "?" + q("/"), http.StatusBadRequest},
	} {
		if res, body := b.do(c.method, c.path, "", d.srv.URL, hdr); res.StatusCode != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, res.StatusCode, body, c.want)
		}
	}
	if res, body := b.do("DELETE", base+"?"+q(dir+"/notes.txt"), "", d.srv.URL, hdr); res.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", res.StatusCode, body)
	}
	if l := list(); strings.Contains(l, "notes.txt") {
		t.Errorf("list after delete still has the file: %s", l)
	}
}

// readUntil reads terminal frames until the text seen contains want.
func readUntil(ctx context.Context, t *testing.T, conn *websocket.Conn, want string) string {
	t.Helper()
	var seen strings.Builder
	for !strings.Contains(seen.String(), want) {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("terminal output %q without %q, then: %v", seen.String(), want, err)
		}
		seen.Write(data)
	}
	return seen.String()
}

// TestTerminalReattach: a page that lost its stream (a pause cuts it) comes back to the
// same shell by pid; a pid that is gone gets a new shell, and the page is told which.
func TestTerminalReattach(t *testing.T) {
	d, b, e := withEnvd(t)
	tok := b.csrf()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A shell whose first client has gone, as after a pause.
	sb := hearth.NewClient(hearth.WithSandboxURL(e.URL), hearth.WithAPIKey("unused")).Attach(d.sandboxMine, testEnvdToken)
	shell, err := sb.PTY.Create(ctx, hearth.PTYSize{Cols: 80, Rows: 24}, func([]byte) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := shell.SendInput(ctx, []byte("KEPT=$((3*7))\r")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	shell.Disconnect()

	conn, _, err := dialTerminal(t, d, b, d.srv.URL, tok, shell.PID)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if hello := readUntil(ctx, t, conn, "}"); !strings.Contains(hello, `"reattached":true`) || !strings.Contains(hello, `"pid":`+strconv.Itoa(int(shell.PID))) {
		t.Errorf("first message %s, want the same pid reattached", hello)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("echo kept-$KEPT\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(ctx, t, conn, "kept-21\r\n")
	conn.Close(websocket.StatusNormalClosure, "")

	conn, _, err = dialTerminal(t, d, b, d.srv.URL, tok, 999999)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if hello := readUntil(ctx, t, conn, "}"); !strings.Contains(hello, `"reattached":false`) {
		t.Errorf("first message for a gone pid %s, want a new shell", hello)
	}
}
