package web_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/runtime/runtimetest"
	"github.com/hearthsh/hearth/internal/store"
)

// TestDashboardInBrowser drives the dashboard in headless Chromium against a real hearth dev
// (gVisor): sign in, create a sandbox, filter the list, run commands in its terminal (colours,
// copy and paste, resize), upload (file picker and drop), download and delete files, browse a
// directory, open a port's preview, fork it, pause and resume it and use the same shell again,
// set its timeout, pause, resume and kill it from the list, create an API key, sign out.
//
// It needs root, runsc and chromium (scripts/deps.sh installs it). Under `make test`
// (HEARTH_REQUIRE_RUNTIME) a missing prerequisite fails the test. With
// HEARTH_UPDATE_SCREENSHOTS=1 the screenshots it takes replace docs/dashboard/*.png.
func TestDashboardInBrowser(t *testing.T) {
	skip := t.Skip
	if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
		skip = t.Fatal
	}
	if testing.Short() {
		t.Skip("skipping: starts hearth dev and a browser")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		skip("skipping: chromium not installed (scripts/deps.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	env, err := runtimetest.Setup(ctx, io.Discard)
	if errors.Is(err, runtimetest.ErrUnavailable) {
		skip(err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	dev := startDev(ctx, t, env)

	shots := t.TempDir()
	if os.Getenv("HEARTH_UPDATE_SCREENSHOTS") != "" {
		shots = filepath.Join(env.RepoRoot, "docs", "dashboard")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1360, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	b := newChrome(t, bctx, shots)

	// Sign in.
	b.do(chromedp.Navigate(dev.url + "/dashboard/"))
	b.waitJS("the sign-in page", `location.pathname === "/dashboard/signin" && !!document.querySelector("#key")`)
	b.shot("signin")
	b.do(chromedp.SendKeys(chromedp.CSS("#key"), dev.key), chromedp.Click(chromedp.CSS("#signin")))
	b.waitJS("the sandbox list", `location.pathname === "/dashboard/" && !!document.querySelector("#sandboxes")`)

	// Create a sandbox from the base template.
	b.waitJS("the template list", `[...document.querySelectorAll("#create-template option")].some(o => o.value === "base")`)
	b.do(chromedp.SendKeys(chromedp.CSS("#create-metadata"), "owner=browser-test"), chromedp.Click(chromedp.CSS("#create-submit")))
	clicked := time.Now()
	b.waitJS("a running sandbox in the list", `!!document.querySelector('#sandboxes tr[data-state="running"]')`)
	t.Logf("create: click to running row in %v", time.Since(clicked).Round(time.Millisecond))
	id := b.eval(`document.querySelector('#sandboxes tr[data-state="running"]').dataset.id`)
	t.Cleanup(func() { dev.kill(id) })
	b.waitJS("the create reported", `document.getElementById("flash").textContent === "create sandbox: created `+id+`"`)
	row := b.eval(`document.querySelector('#sandboxes tr[data-state="running"]').textContent`)
	for _, want := range []string{"base", "owner=browser-test", "local"} {
		if !strings.Contains(row, want) {
			t.Errorf("list row %q lacks %q", row, want)
		}
	}
	b.waitJS("the sandbox's CPU and memory in use now", `/^now \d/.test(document.querySelector('#sandboxes tr[data-id="`+id+`"] .cpu-now').textContent) && /^now \d/.test(document.querySelector('#sandboxes tr[data-id="`+id+`"] .mem-now').textContent)`)
	b.shot("sandboxes")

	// A metadata filter that does not match hides it; the URL it leaves shows the same in a
	// fresh page; one that matches shows it again.
	b.do(chromedp.SendKeys(chromedp.CSS("#filter-metadata"), "owner=someone-else"))
	b.waitJS("the sandbox hidden by the filter", `location.search === "?metadata=owner%3Dsomeone-else" && !document.querySelector('#sandboxes tr[data-id="`+id+`"]') && !document.getElementById("empty").hidden`)
	b.do(chromedp.Navigate(b.eval(`location.href`)))
	b.waitJS("the filtered view from its URL", `document.getElementById("filter-metadata").value === "owner=someone-else" && document.getElementById("refreshed").textContent !== "" && !document.querySelector('#sandboxes tr[data-id="`+id+`"]')`)
	b.do(chromedp.Navigate(dev.url + "/dashboard/?metadata=owner%3Dbrowser-test&state=running"))
	b.waitJS("the sandbox through a matching filter", `!!document.querySelector('#sandboxes tr[data-id="`+id+`"]')`)

	// Its page: a terminal that runs commands.
	b.do(chromedp.Click(chromedp.CSS(`#sandboxes tr[data-id="` + id + `"] a`)))
	b.waitJS("the terminal to connect", `document.body.dataset.terminal === "connected"`)
	b.waitJS("the shell's prompt", `window.hearthTerminal.buffer.active.getLine(0).translateToString(true).includes("$")`)
	typed := time.Now()
	b.typeInTerminal("echo $((6*7))\r")
	b.waitScreenLine("42")
	t.Logf("terminal: keystrokes to output on screen in %v (polled every 200 ms)", time.Since(typed).Round(time.Millisecond))

	// Colours: the shell's SGR codes reach the screen (red is palette colour 1).
	const cmd = "echo copied-$((40+2))"
	b.typeInTerminal(`printf '\033[31m%s\033[0m\n' '` + cmd + `'` + "\r")
	b.waitScreenLine(cmd)
	if got := b.eval(screenLineJS(cmd, `{ const c = l.getCell(0); return c.isFgPalette() + ":" + c.getFgColor() }`)); got != "true:1" {
		t.Errorf("%q is drawn in colour %q (palette?:index), want true:1", cmd, got)
	}
	// Copy and paste: select that line, Ctrl+Shift+C copies it, Ctrl+Shift+V pastes it at
	// the prompt, Enter runs it.
	b.eval(`(document.addEventListener("copy", e => { window.copiedText = e.clipboardData.getData("text/plain") }), "")`)
	b.eval(screenLineJS(cmd, fmt.Sprintf(`{ window.hearthTerminal.select(0, i, %d); return "" }`, len(cmd))))
	b.pressKey("C", "KeyC", 67, modCtrl|modShift)
	b.waitJS("the selection copied", `window.copiedText === "`+cmd+`"`)
	b.pressKey("V", "KeyV", 86, modCtrl|modShift)
	b.typeInTerminal("\r")
	b.waitScreenLine("copied-42")
	// Resize: a narrower window refits the terminal and the PTY gets its new size.
	cols := b.eval(`String(window.hearthTerminal.cols)`)
	b.do(chromedp.EmulateViewport(900, 1000))
	b.waitJS("the terminal refitted", `String(window.hearthTerminal.cols) !== "`+cols+`"`)
	b.typeInTerminal("stty size\r")
	b.waitScreenLine(b.eval(`window.hearthTerminal.rows + " " + window.hearthTerminal.cols`))
	narrow := b.eval(`String(window.hearthTerminal.cols)`)
	b.do(chromedp.EmulateViewport(1360, 1000)) // the window's own size again
	b.waitJS("the terminal refitted wider", `window.hearthTerminal.cols > `+narrow)
	b.typeInTerminal("clear\r")

	// Upload a file (the drop zone and the file input share the upload path) and see it.
	local := filepath.Join(t.TempDir(), "hello-dashboard.txt")
	if err := os.WriteFile(local, []byte("uploaded through the dashboard\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitJS("the file list", `document.querySelectorAll("#files tbody tr").length > 0`)
	b.do(chromedp.SetUploadFiles(chromedp.CSS("#files-input"), []string{local}, chromedp.NodeReady))
	b.waitJS("the uploaded file listed", `!!document.querySelector('#files tr[data-name="hello-dashboard.txt"]')`)
	// A drop on the drop zone (the event a drag from the desktop ends with) uploads too.
	b.eval(`(() => { const dt = new DataTransfer(); dt.items.add(new File(["dropped\n"], "dropped.txt"));
		document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true })); return "" })()`)
	b.waitJS("the dropped file listed", `!!document.querySelector('#files tr[data-name="dropped.txt"]')`)
	b.typeInTerminal("cat ~/hello-dashboard.txt\r")
	b.waitScreenLine("uploaded through the dashboard")

	// Download: the file's link saves its bytes.
	downloads := t.TempDir()
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
			Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
		return err
	}))
	b.do(chromedp.Click(chromedp.CSS(`#files tr[data-name="hello-dashboard.txt"] a`)))
	waitFile(t, filepath.Join(downloads, "hello-dashboard.txt"), "uploaded through the dashboard\n")
	// Delete: the file leaves the list and the sandbox.
	b.do(chromedp.Click(chromedp.CSS(`#files tr[data-name="dropped.txt"] button`)))
	b.waitJS("dropped.txt gone from the list", `!document.querySelector('#files tr[data-name="dropped.txt"]')`)
	b.typeInTerminal("test -e ~/dropped.txt || echo deleted-ok\r")
	b.waitScreenLine("deleted-ok")
	// Browse: a directory opens, Up goes back.
	b.typeInTerminal("mkdir -p ~/sub && echo inner > ~/sub/inner.txt && echo made-sub\r")
	b.waitScreenLine("made-sub")
	b.do(chromedp.Click(chromedp.CSS(`#files-nav button[type="submit"]`)))
	b.waitJS("the new directory listed", `!!document.querySelector('#files tr[data-name="sub"] a')`)
	b.do(chromedp.Click(chromedp.CSS(`#files tr[data-name="sub"] a`)))
	b.waitJS("the directory's files", `document.getElementById("files-path").value === "/home/user/sub" && !!document.querySelector('#files tr[data-name="inner.txt"]')`)
	b.do(chromedp.Click(chromedp.CSS("#files-up")))
	b.waitJS("the parent again", `document.getElementById("files-path").value === "/home/user" && !!document.querySelector('#files tr[data-name="hello-dashboard.txt"]')`)
	b.waitJS("the lifecycle log", `document.getElementById("logs").textContent.includes("sandbox running")`)
	b.waitJS("metrics samples", `document.getElementById("metrics-now").textContent.startsWith("now:") && Number(document.getElementById("metrics").dataset.samples) >= 3`)

	// A web server in the sandbox shows under Open ports; its link opens the app. The
	// dashboard was reached on 127.0.0.1, so hearth dev's .localhost domain resolves for this
	// browser and the link is host-routed (the port's own origin).
	b.typeInTerminal("(cd ~ && python3 -m http.server 8000 >/dev/null 2>&1 &)\r")
	b.waitJS("port 8000 listed", `!!document.querySelector('#ports li[data-port="8000"] a')`)
	b.shot("sandbox")
	link := b.eval(`document.querySelector('#ports li[data-port="8000"] a').href`)
	if want := "http://8000-" + id + ".hearth.localhost:"; !strings.HasPrefix(link, want) {
		t.Errorf("preview link %s, want it host-routed (%s…)", link, want)
	}
	b.do(chromedp.Navigate(link))
	b.waitJS("the app's directory listing", `document.title.startsWith("Directory listing") && document.body.innerText.includes("hello-dashboard.txt")`)
	b.shot("preview-http-server")
	b.do(chromedp.Navigate(dev.url + "/dashboard/sandboxes/" + id))
	b.waitJS("the terminal to connect again", `document.body.dataset.terminal === "connected"`)

	// Pause: the terminal's stream ends. Resume: it comes back to the same shell.
	b.typeInTerminal("KEPT=$((2+3)); echo set-$KEPT\r")
	b.waitScreenLine("set-5") // the shell has the line: keys typed while pausing are lost
	pid := b.eval(`document.body.dataset.terminalPid`)
	b.do(chromedp.Click(chromedp.CSS("#sb-pause")))
	b.waitJS("the sandbox paused", `document.querySelector("#sb-state").textContent === "paused"`)
	b.waitJS("the terminal to disconnect", `document.body.dataset.terminal === "closed"`)
	b.do(chromedp.Click(chromedp.CSS("#sb-resume")))
	resumed := time.Now()
	b.waitJS("the sandbox running", `document.querySelector("#sb-state").textContent === "running"`)
	b.waitJS("the terminal to reconnect", `document.body.dataset.terminal === "connected"`)
	t.Logf("resume: click to terminal reconnected in %v", time.Since(resumed).Round(time.Millisecond))
	b.typeInTerminal("echo back-$KEPT\r")
	b.waitScreenLine("back-5")
	if now := b.eval(`document.body.dataset.terminalPid`); now != pid {
		t.Errorf("terminal after resume is shell %s, want the same shell %s", now, pid)
	}
	b.waitJS("pause and resume in the log", `/sandbox paused[\s\S]*sandbox resumed/.test(document.getElementById("logs").textContent)`)

	// Fork: the copy opens on its own page with the files; killing it leads back to the list.
	b.do(chromedp.Click(chromedp.CSS("#sb-fork")))
	b.waitJS("the fork's page", `location.pathname.startsWith("/dashboard/sandboxes/") && document.body.dataset.id !== "`+id+`"`)
	forkID := b.eval(`document.body.dataset.id`)
	t.Cleanup(func() { dev.kill(forkID) })
	b.waitJS("the fork running", `document.querySelector("#sb-state").textContent === "running"`)
	b.waitJS("the fork's files", `!!document.querySelector('#files tr[data-name="hello-dashboard.txt"]')`)
	b.do(chromedp.Click(chromedp.CSS("#sb-kill")))
	b.waitJS("the list without the fork", `location.pathname === "/dashboard/" && !!document.querySelector('#sandboxes tr[data-id="`+id+`"]') && !document.querySelector('#sandboxes tr[data-id="`+forkID+`"]')`)
	b.do(chromedp.Navigate(dev.url + "/dashboard/sandboxes/" + id))
	b.waitJS("the sandbox page again", `document.querySelector("#sb-state").textContent === "running"`)

	// A new timeout shows as the new expiry; kill removes the sandbox from the list.
	b.do(chromedp.SetValue(chromedp.CSS("#sb-timeout"), "1200"), chromedp.Click(chromedp.CSS("#sb-set-timeout")))
	b.waitJS("the new expiry", `/in (19m|20m)/.test(document.querySelector("#sb-info").textContent)`)

	// The list's own buttons: pause, resume, kill.
	b.do(chromedp.Navigate(dev.url + "/dashboard/"))
	listRow := `#sandboxes tr[data-id="` + id + `"]`
	b.waitJS("the new expiry in the list", `/in (19m|20m)/.test(document.querySelector('`+listRow+`').textContent)`)
	b.do(chromedp.Click(chromedp.CSS(listRow + " button.pause")))
	b.waitJS("paused from the list", `document.querySelector('`+listRow+`').dataset.state === "paused"`)
	b.do(chromedp.Click(chromedp.CSS(listRow + " button.resume")))
	b.waitJS("resumed from the list", `document.querySelector('`+listRow+`').dataset.state === "running"`)
	b.do(chromedp.Click(chromedp.CSS(listRow + " button.kill")))
	b.waitJS("the empty list after kill", `!document.querySelector('`+listRow+`') && !document.getElementById("empty").hidden`)

	// API keys: create one, see it listed.
	b.do(chromedp.Navigate(dev.url + "/dashboard/keys"))
	b.waitJS("the key list", `document.querySelectorAll("#keys tbody tr").length >= 1`)
	b.do(chromedp.SendKeys(chromedp.CSS("#key-name"), "from-browser"), chromedp.Click(chromedp.CSS(`#key-create button`)))
	b.waitJS("the new key", `document.getElementById("key-new-value").textContent.startsWith("e2b_")`)
	b.waitJS("the new key listed", `[...document.querySelectorAll("#keys tbody td")].some(td => td.textContent === "from-browser")`)
	b.shot("keys")

	// Sign out: the pages ask for a key again.
	b.do(chromedp.Click(chromedp.CSS("#signout")))
	b.waitJS("the sign-in page", `location.pathname === "/dashboard/signin"`)
	b.do(chromedp.Navigate(dev.url + "/dashboard/"))
	b.waitJS("the sign-in page after sign-out", `location.pathname === "/dashboard/signin"`)
}

// newChrome starts the browser. Its first action runs on ctx itself: chromedp ties the
// browser's life to the context of the first action, and later steps use timeouts.
func newChrome(t *testing.T, ctx context.Context, shots string) *chrome {
	t.Helper()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &chrome{t: t, ctx: ctx, shots: shots}
}

// chrome drives one browser tab; every step fails the test with what it waited for.
type chrome struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func (b *chrome) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v (page text: %s)", err, b.pageText())
	}
}

func (b *chrome) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

func (b *chrome) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	return s
}

// waitJS polls a JavaScript condition for up to two minutes (a create or resume in gVisor
// takes seconds on a busy machine).
func (b *chrome) waitJS(what, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { try { return !!(`+cond+`) } catch (e) { return false } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("waiting for %s: %v (page text: %s)", what, err, b.pageText())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// typeInTerminal types keys into the terminal as a user does: key events into xterm.js's
// focused input. Each key is one keyDown carrying its text, as a keyboard makes (chromedp's
// KeyEvent adds a char event too, which xterm.js reads as a second keystroke).
func (b *chrome) typeInTerminal(keys string) {
	b.t.Helper()
	b.eval(`(window.hearthTerminal.focus(), "")`)
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range keys {
			down := input.DispatchKeyEventParams{Type: "keyDown", Key: string(r), Text: string(r), UnmodifiedText: string(r)}
			if r == '\r' {
				down.Key, down.Code, down.WindowsVirtualKeyCode = "Enter", "Enter", 13
			}
			up := down
			up.Type, up.Text, up.UnmodifiedText = "keyUp", "", ""
			for _, ev := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, ev); err != nil {
					return fmt.Errorf("type %q: %w", r, err)
				}
			}
		}
		return nil
	}))
}

// waitFile waits up to 30 s for path to hold want (a download landing).
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	var got []byte
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got, err = os.ReadFile(path); err == nil && string(got) == want {
			return
		}
	}
	t.Fatalf("download %s: %q, %v; want %q", path, got, err, want)
}

// screenLineJS is JavaScript that runs body with l, the first line of the terminal's buffer
// that reads text (trimmed), and i, its index; it returns "" when no line does.
func screenLineJS(text, body string) string {
	return fmt.Sprintf(`(() => { const b = window.hearthTerminal.buffer.active; for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l.translateToString(true).trim() === %q) %s } return "" })()`, text, body)
}

// CDP's modifier bits.
const (
	modCtrl  = 2
	modShift = 8
)

// pressKey sends one key press with modifiers to the focused element, as a keyboard does.
func (b *chrome) pressKey(key, code string, vk, mods int64) {
	b.t.Helper()
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeKeyDown, input.DispatchKeyEventTypeKeyUp} {
			ev := input.DispatchKeyEventParams{Type: typ, Key: key, Code: code, WindowsVirtualKeyCode: vk, Modifiers: mods}
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, ev); err != nil {
				return fmt.Errorf("press %s: %w", key, err)
			}
		}
		return nil
	}))
}

// waitScreenLine waits until a line of the terminal's screen (its buffer) reads exactly
// line: the command's output, not the echo of the command typed.
func (b *chrome) waitScreenLine(line string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const b = window.hearthTerminal.buffer.active; for (let i = 0; i < b.length; i++) { if (b.getLine(i).translateToString(true).trim() === %q) return true } return false })()`, line)
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			screen := b.eval(`(() => { const b = window.hearthTerminal.buffer.active; const out = []; for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); return out.join("\n") })()`)
			b.t.Fatalf("terminal never showed the line %q; screen:\n%s", line, strings.TrimRight(screen, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// shot saves a PNG of the whole page as NAME.png.
func (b *chrome) shot(name string) {
	b.t.Helper()
	time.Sleep(300 * time.Millisecond) // let the last redraw land
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		b.t.Fatalf("screenshot %s: only %d bytes", name, len(png))
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// devProcess is a hearth dev for one test.
type devProcess struct {
	url, key string
}

func (d *devProcess) kill(id string) {
	req, _ := http.NewRequest(http.MethodDelete, d.url+"/sandboxes/"+id, nil)
	req.Header.Set("X-API-Key", d.key)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
}

// startDev builds hearth and runs `hearth dev` with its own data dir (the base template
// seeded with hard links from the runtime tests' one), network prefix and pool, on loopback
// ports.
func startDev(ctx context.Context, t *testing.T, env *runtimetest.Env) *devProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hearth")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hearth")
	build.Dir = env.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hearth: %v\n%s", err, out)
	}
	data := filepath.Join(env.DataDir, "web-dashboard")
	for _, p := range []string{"hearth.db", "hearth.db-wal", "hearth.db-shm", "api-key", "sandboxes"} {
		if err := os.RemoveAll(filepath.Join(data, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "templates", "base")); err != nil {
		if err := os.MkdirAll(filepath.Join(data, "templates"), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(data, "templates", ".seed")
		_ = os.RemoveAll(tmp)
		if out, err := exec.Command("cp", "-al", filepath.Join(env.DataDir, "templates", "base"), tmp).CombinedOutput(); err != nil {
			t.Fatalf("seed the base template: %v: %s", err, out)
		}
		if err := os.Rename(tmp, filepath.Join(data, "templates", "base")); err != nil {
			t.Fatal(err)
		}
	}
	ports := freePorts(t, 4)
	key := cp.NewAPIKey()
	d := &devProcess{url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), key: key}
	logPath := filepath.Join(t.TempDir(), "hearth-dev.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev", "--data-dir", data, "--api-key", key,
		"--runsc", env.Runsc, "--envd", env.Envd,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--proxy-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--agent-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--agent-proxy-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]),
		"--slot-prefix", "hwebt", "--pool", "10.239.0.0/16", "--default-timeout", "10m")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("hearth dev log (last 4 KiB):\n%s", tail(b, 4096))
			}
		}
	})
	// Ready when the agent has announced the base template.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/templates", nil)
		req.Header.Set("X-API-Key", key)
		if res, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 && strings.Contains(string(body), `"templateID":"base"`) {
				return d
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("hearth dev exited:\n%s", tail(b, 4096))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("hearth dev did not list the base template within 5 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freePorts returns n distinct free loopback ports, holding all open until all are chosen.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// TestPagesInBrowser runs the list and key pages' scripts in headless Chromium against a
// control plane with stored sandboxes (no runtime): the rows show what the API says, and a
// key made on the keys page is listed.
func TestPagesInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
			t.Fatal("chromium not installed (scripts/deps.sh installs it)")
		}
		t.Skip("skipping: chromium not installed (scripts/deps.sh installs it)")
	}
	d := newDashboard(t)
	// Two more sandboxes of the team for the list's filters: a paused one of another
	// template and a running one with metadata.
	now := time.Now().UTC()
	for _, sb := range []store.Sandbox{
		{ID: "sbxpaused", TeamID: store.DefaultTeam, TemplateID: d.builtTemplate, HostID: "h", State: store.StatePaused,
			StartedAt: now.Add(-time.Minute), EndAt: now.Add(time.Hour), Metadata: map[string]string{"env": "dev"}},
		{ID: "sbxtagged", TeamID: store.DefaultTeam, TemplateID: "base", HostID: "h", State: store.StateRunning, CPUs: 2, MemoryMiB: 512,
			StartedAt: now.Add(-2 * time.Minute), EndAt: now.Add(time.Hour), Metadata: map[string]string{"env": "prod", "owner": "ann lee"}},
	} {
		if err := d.st.CreateSandbox(context.Background(), sb); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.st.PutTemplate(context.Background(), store.Template{ID: "base", TeamID: store.DefaultTeam, BuildStatus: store.BuildReady,
		CPUs: 2, MemoryMiB: 512, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1360, 800), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	shots := t.TempDir()
	if os.Getenv("HEARTH_UPDATE_SCREENSHOTS") != "" {
		shots = filepath.Join("..", "..", "docs", "dashboard") // the package's dir is the test's working dir
	}
	b := newChrome(t, bctx, shots)

	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/"))
	b.waitJS("the sign-in page", `location.pathname === "/dashboard/signin"`)
	b.do(chromedp.SendKeys(chromedp.CSS("#key"), cp.NewAPIKey()), chromedp.Click(chromedp.CSS("#signin")))
	b.waitJS("the refusal", `document.querySelector("#signin-error")?.textContent.includes("invalid API key")`)
	b.do(chromedp.SendKeys(chromedp.CSS("#key"), d.keyMine), chromedp.Click(chromedp.CSS("#signin")))
	b.waitJS("the team's sandbox listed", `!!document.querySelector('#sandboxes tr[data-id="`+d.sandboxMine+`"]')`)
	if got := b.listed(); got != "sbxmine sbxpaused sbxtagged" {
		t.Errorf("list shows %q, want the team's three sandboxes, newest first", got)
	}
	if row := b.eval(`document.querySelector('#sandboxes tr[data-id="sbxmine"]').textContent`); !strings.Contains(row, "running") || !strings.Contains(row, "base") {
		t.Errorf("row %q lacks state or template", row)
	}

	// Filters: each hides the sandboxes it does not match, and the URL it leaves reproduces
	// the view in a fresh page.
	setFilter := func(name, value string) {
		b.eval(fmt.Sprintf(`(() => { const e = document.getElementById("filter-%s"); e.value = %q; e.dispatchEvent(new Event(e.tagName === "SELECT" ? "change" : "input")); return "" })()`, name, value))
	}
	b.waitJS("the template filter's options", `[...document.querySelectorAll("#filter-template option")].some(o => o.value === "`+d.builtTemplate+`")`)
	for _, c := range []struct {
		filter, value string
		query, rows   string
	}{
		{"state", "paused", "state=paused", "sbxpaused"},
		{"state", "", "", "sbxmine sbxpaused sbxtagged"},
		{"template", d.builtTemplate, "template=" + d.builtTemplate, "sbxpaused"},
		{"template", "base", "template=base", "sbxmine sbxtagged"},
		{"metadata", "owner=ann lee", "template=base&metadata=owner%3Dann+lee", "sbxtagged"},
		{"template", "", "metadata=owner%3Dann+lee", "sbxtagged"},
		{"metadata", "env=dev", "metadata=env%3Ddev", "sbxpaused"},
		{"metadata", "", "", "sbxmine sbxpaused sbxtagged"},
		{"id", "MINE", "id=MINE", "sbxmine"},
	} {
		setFilter(c.filter, c.value)
		b.waitJS(c.filter+"="+c.value+" applied", `location.search === "`+map[bool]string{true: "?", false: ""}[c.query != ""]+c.query+`" && [...document.querySelectorAll("#sandboxes tbody tr")].map(r => r.dataset.id).join(" ") === "`+c.rows+`"`)
		if c.value == "owner=ann lee" {
			b.shot("sandboxes-filtered")
		}
	}
	setFilter("id", "")
	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/?state=running&metadata=env%3Dprod"))
	b.waitJS("the view the link names", `document.getElementById("filter-state").value === "running" && document.getElementById("filter-metadata").value === "env=prod" && [...document.querySelectorAll("#sandboxes tbody tr")].map(r => r.dataset.id).join(" ") === "sbxtagged"`)
	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/?metadata=env"))
	b.waitJS("a bad metadata filter explained", `document.getElementById("filter-error").textContent.includes('"env" is not key=value')`)
	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/?id=nothing-like-this"))
	b.waitJS("no match said", `document.getElementById("empty").textContent === "No sandboxes match these filters." && !document.getElementById("empty").hidden`)
	// Nothing loads from anywhere but the dashboard: the sandbox page's terminal (xterm.js)
	// included.
	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/sandboxes/" + d.sandboxMine))
	b.waitJS("the terminal drawn", `!!window.hearthTerminal && !!document.querySelector("#terminal .xterm")`)
	if got := b.eval(`(() => { const rs = performance.getEntriesByType("resource").map(e => e.name);
		const off = rs.filter(n => !n.startsWith(location.origin + "/"));
		return off.length ? "from elsewhere: " + off.join(" ") : rs.some(n => n.endsWith("/dashboard/static/vendor/xterm.js")) ? "ok" : "no xterm.js in " + rs.join(" ") })()`); got != "ok" {
		t.Errorf("sandbox page resources: %s", got)
	}

	// Templates: the list, a template's builds, a build's log.
	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/templates"))
	b.waitJS("the template listed", `!!document.querySelector('#templates tr[data-id="`+d.builtTemplate+`"]')`)
	b.do(chromedp.Click(chromedp.CSS(`#templates tr[data-id="` + d.builtTemplate + `"] a`)))
	b.waitJS("its build", `!!document.querySelector('#builds tr[data-build="`+d.builtBuild+`"]')`)
	b.do(chromedp.Click(chromedp.CSS(`#builds tr[data-build="` + d.builtBuild + `"] button`)))
	b.waitJS("the whole build log", `document.getElementById("build-log").textContent.includes("step 2 line 149") && document.getElementById("build-log").textContent.includes("exit status 1")`)
	b.shot("templates")

	b.do(chromedp.Navigate(d.srv.URL + "/dashboard/keys"))
	b.waitJS("the key list", `document.querySelectorAll("#keys tbody tr").length === 1`)
	b.do(chromedp.SendKeys(chromedp.CSS("#key-name"), "made-in-browser"), chromedp.Click(chromedp.CSS(`#key-create button`)))
	b.waitJS("the new key listed", `document.querySelectorAll("#keys tbody tr").length === 2 && document.getElementById("key-new-value").textContent.startsWith("e2b_")`)
	made := b.eval(`document.getElementById("key-new-value").textContent`)
	if code := apiStatus(t, d.srv.URL, made); code != http.StatusOK {
		t.Fatalf("the key made in the browser: GET /templates answers %d, want 200", code)
	}
	// Revoke it: it leaves the list, and the API refuses it.
	keyID := b.eval(`[...document.querySelectorAll("#keys tbody tr")].find(r => r.cells[0].textContent === "made-in-browser").dataset.id`)
	b.do(chromedp.Click(chromedp.CSS(`#keys tr[data-id="` + keyID + `"] button`)))
	b.waitJS("the revoked key gone", `document.querySelectorAll("#keys tbody tr").length === 1 && ![...document.querySelectorAll("#keys tbody td")].some(td => td.textContent === "made-in-browser")`)
	if code := apiStatus(t, d.srv.URL, made); code != http.StatusUnauthorized {
		t.Errorf("the revoked key: GET /templates answers %d, want 401", code)
	}
}

// listed is the IDs of the sandbox list's rows, in order.
func (b *chrome) listed() string {
	b.t.Helper()
	return b.eval(`[...document.querySelectorAll("#sandboxes tbody tr")].map(r => r.dataset.id).join(" ")`)
}

// apiStatus is the status of GET /templates with key.
func apiStatus(t *testing.T, base, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/templates", nil)
	req.Header.Set("X-API-Key", key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
