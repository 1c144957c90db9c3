package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the real server against real kernels on the host: Debian's ipykernel
// (scripts/deps.sh installs python3-ipykernel, -matplotlib and -pandas) and bash.

const testPython = "/usr/bin/python3"

// needKernel skips without ipykernel, or fails under `make test` (HEARTH_REQUIRE_RUNTIME).
func needKernel(t *testing.T) {
	t.Helper()
	if err := exec.Command(testPython, "-c", "import ipykernel").Run(); err != nil {
		if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
			t.Fatalf("%s has no ipykernel (apt-get install python3-ipykernel): %v", testPython, err)
		}
		t.Skipf("%s has no ipykernel: %v", testPython, err)
	}
}

type testServer struct {
	*httptest.Server
	cwd string
}

// startServer runs a server with its default python context; envdURL may be "".
func startServer(t *testing.T, envdURL string) *testServer {
	t.Helper()
	needKernel(t)
	cwd := t.TempDir()
	s, err := New(Config{DefaultCwd: cwd, Python: testPython, EnvdURL: envdURL, RunDir: t.TempDir(), InterruptGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return &testServer{Server: hs, cwd: cwd}
}

// contextInfo is a context as the API describes it.
type contextInfo struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

type timedLine struct {
	line
	at time.Time
}

// run posts body to /execute and returns the stream's lines with their arrival times.
func (ts *testServer) run(t *testing.T, body map[string]any) []timedLine {
	t.Helper()
	return ts.runCtx(t, context.Background(), body)
}

func (ts *testServer) runCtx(t *testing.T, ctx context.Context, body map[string]any) []timedLine {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/execute", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /execute: %s: %s", resp.Status, msg)
	}
	var out []timedLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("stream line %q: %v", sc.Text(), err)
		}
		out = append(out, timedLine{l, time.Now()})
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		t.Fatalf("read stream: %v", err)
	}
	return out
}

// execution is what an SDK makes of a stream.
type execution struct {
	results        []line
	stdout, stderr []string
	err            line
	count          float64
	ended          bool
}

func parse(lines []timedLine) execution {
	var e execution
	for _, l := range lines {
		switch l.line["type"] {
		case "result":
			e.results = append(e.results, l.line)
		case "stdout":
			e.stdout = append(e.stdout, l.line["text"].(string))
		case "stderr":
			e.stderr = append(e.stderr, l.line["text"].(string))
		case "error":
			e.err = l.line
		case "number_of_executions":
			e.count = l.line["execution_count"].(float64)
		case "end_of_execution":
			e.ended = true
		}
	}
	return e
}

// mainText is the SDK's Execution.text.
func (e execution) mainText() string {
	for _, r := range e.results {
		if r["is_main_result"] == true {
			s, _ := r["text"].(string)
			return s
		}
	}
	return ""
}

func stdoutText(e execution) string { return strings.TrimSuffix(strings.Join(e.stdout, ""), "\n") }

func (ts *testServer) call(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, ts.URL+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (ts *testServer) createContext(t *testing.T, body map[string]any) contextInfo {
	t.Helper()
	code, b := ts.call(t, http.MethodPost, "/contexts", body)
	if code != http.StatusOK {
		t.Fatalf("POST /contexts: %d %s", code, b)
	}
	var c contextInfo
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExecution(t *testing.T) {
	ts := startServer(t, "")
	t.Run("state carries over and the last expression is the main result", func(t *testing.T) {
		first := parse(ts.run(t, map[string]any{"code": "x = 1"}))
		if first.err != nil || len(first.results) != 0 || !first.ended {
			t.Fatalf("x = 1: %+v", first)
		}
		second := parse(ts.run(t, map[string]any{"code": "x + 1"}))
		if got := second.mainText(); got != "2" {
			t.Fatalf("x + 1: text %q, want 2 (%+v)", got, second)
		}
		if second.count != first.count+1 {
			t.Fatalf("execution counts %v then %v", first.count, second.count)
		}
	})
	t.Run("stdout and stderr stream while the cell runs", func(t *testing.T) {
		lines := ts.run(t, map[string]any{"code": "import sys, time\nprint('first', flush=True)\nprint('oops', file=sys.stderr, flush=True)\ntime.sleep(1.5)\nprint('second')"})
		var firstAt, secondAt time.Time
		var order []string
		for _, l := range lines {
			if l.line["type"] == "stdout" || l.line["type"] == "stderr" {
				order = append(order, l.line["type"].(string)+":"+l.line["text"].(string))
				if _, ok := l.line["timestamp"].(string); !ok {
					t.Errorf("%v line without a timestamp (the Python SDK needs it)", l.line["type"])
				}
			}
			switch l.line["text"] {
			case "first\n":
				firstAt = l.at
			case "second\n":
				secondAt = l.at
			}
		}
		want := []string{"stdout:first\n", "stderr:oops\n", "stdout:second\n"}
		if strings.Join(order, "|") != strings.Join(want, "|") {
			t.Fatalf("output %q, want %q", order, want)
		}
		if d := secondAt.Sub(firstAt); d < time.Second {
			t.Fatalf("first line arrived only %v before the second: not streamed", d)
		}
	})
	t.Run("an exception is an error line with a traceback", func(t *testing.T) {
		e := parse(ts.run(t, map[string]any{"code": "1/0"}))
		if e.err == nil || e.err["name"] != "ZeroDivisionError" || e.err["value"] != "division by zero" {
			t.Fatalf("error %v", e.err)
		}
		tb, _ := e.err["traceback"].(string)
		if !strings.Contains(tb, "ZeroDivisionError") || !strings.Contains(tb, "1/0") || strings.Contains(tb, "\x1b[") {
			t.Fatalf("traceback %q: want the failing line, no ANSI colours", tb)
		}
		if !e.ended {
			t.Fatal("no end_of_execution")
		}
	})
	t.Run("every MIME kind maps to its result field", func(t *testing.T) {
		code := `from IPython.display import display
display({'text/plain': "'quoted'", 'text/html': '<b>h</b>', 'text/markdown': '# m', 'image/svg+xml': '<svg/>',
         'image/png': 'iVBORw0KGgo=', 'image/jpeg': '/9j/4A==', 'application/pdf': 'JVBERi0=', 'text/latex': '$x$',
         'application/json': {'k': [1, 2]}, 'application/javascript': 'alert(1)', 'application/x-custom': 'c'}, raw=True)
display({'text/latex': r'\alpha'}, raw=True)`
		e := parse(ts.run(t, map[string]any{"code": code}))
		if len(e.results) != 2 {
			t.Fatalf("results %v", e.results)
		}
		r := e.results[0]
		want := map[string]any{"text": "quoted", "html": "<b>h</b>", "markdown": "# m", "svg": "<svg/>", "png": "iVBORw0KGgo=",
			"jpeg": "/9j/4A==", "pdf": "JVBERi0=", "latex": "$x$", "javascript": "alert(1)", "is_main_result": false}
		for k, v := range want {
			if r[k] != v {
				t.Errorf("%s = %v, want %v", k, r[k], v)
			}
		}
		if j, _ := json.Marshal(r["json"]); string(j) != `{"k":[1,2]}` {
			t.Errorf("json = %s", j)
		}
		if extra, _ := r["extra"].(map[string]any); extra["application/x-custom"] != "c" {
			t.Errorf("extra = %v", r["extra"])
		}
		if _, ok := e.results[1]["text"]; ok || e.results[1]["latex"] != `\alpha` {
			t.Errorf("latex-only display got %v: no text may be made up", e.results[1])
		}
	})
	t.Run("dicts are JSON results", func(t *testing.T) {
		e := parse(ts.run(t, map[string]any{"code": "{'a': [1, 2]}"}))
		if j, _ := json.Marshal(e.results[0]["json"]); string(j) != `{"a":[1,2]}` || e.mainText() != "{'a': [1, 2]}" {
			t.Fatalf("result %v", e.results)
		}
	})
	t.Run("a DataFrame is data, a matplotlib plot is png", func(t *testing.T) {
		if exec.Command(testPython, "-c", "import pandas, matplotlib").Run() != nil {
			if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
				t.Fatal("python3-pandas and python3-matplotlib are missing")
			}
			t.Skip("python3-pandas or python3-matplotlib missing")
		}
		e := parse(ts.run(t, map[string]any{"code": "import pandas as pd\npd.DataFrame({'a': [1, 2, 3], 't': pd.to_datetime(['2024-01-01'] * 3)})"}))
		if len(e.results) != 1 {
			t.Fatalf("results %v (error %v)", e.results, e.err)
		}
		if j, _ := json.Marshal(e.results[0]["data"]); string(j) != `{"a":[1,2,3],"t":["2024-01-01T00:00:00","2024-01-01T00:00:00","2024-01-01T00:00:00"]}` {
			t.Errorf("data = %s", j)
		}
		if _, ok := e.results[0]["html"].(string); !ok {
			t.Errorf("no html table: %v", e.results[0])
		}
		e = parse(ts.run(t, map[string]any{"code": "\n    import matplotlib.pyplot as plt\n    plt.plot([1, 2, 3])\n    plt.show()\n    x = 'done'\n    x"}))
		if len(e.results) != 2 || e.err != nil {
			t.Fatalf("results %v, error %v", e.results, e.err)
		}
		png, _ := e.results[0]["png"].(string)
		if !strings.HasPrefix(png, "iVBORw0KGgo") || e.results[0]["is_main_result"] != false || e.mainText() != "done" {
			t.Fatalf("plot result %.100v", e.results)
		}
	})
	t.Run("matplotlib figures come with E2B's chart JSON", func(t *testing.T) {
		if exec.Command(testPython, "-c", "import matplotlib").Run() != nil {
			if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
				t.Fatal("python3-matplotlib is missing")
			}
			t.Skip("python3-matplotlib missing")
		}
		chartOf := func(code string) map[string]any {
			t.Helper()
			e := parse(ts.run(t, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.figure()\n" + code + "\nplt.show()"}))
			if len(e.results) != 1 || e.err != nil {
				t.Fatalf("%s: results %.200v, error %v", code, e.results, e.err)
			}
			c, _ := e.results[0]["chart"].(map[string]any)
			return c
		}
		line := chartOf("import datetime\nx = [datetime.datetime(2023, 9, 1) + datetime.timedelta(hours=i) for i in range(10)]\nplt.plot(x, range(10), label='sin(x)')\nplt.xlabel('Time (s)'); plt.ylabel('Amplitude [Hz]'); plt.title('Waves')")
		els, _ := line["elements"].([]any)
		if line["type"] != "line" || line["title"] != "Waves" || line["x_unit"] != "s" || line["y_unit"] != "Hz" || line["x_scale"] != "datetime" || line["y_scale"] != "linear" || len(els) != 1 {
			t.Fatalf("line chart %v", line)
		}
		first := els[0].(map[string]any)
		if pts := first["points"].([]any); first["label"] != "sin(x)" || len(pts) != 10 || !strings.HasPrefix(pts[0].([]any)[0].(string), "2023-09-01T00:00:00") {
			t.Fatalf("line element %v", first)
		}
		bar := chartOf("plt.bar(['A', 'B'], [100, 200], label='Books Sold')")
		if j, _ := json.Marshal(bar["elements"]); bar["type"] != "bar" || string(j) != `[{"group":"Books Sold","label":"A","value":100},{"group":"Books Sold","label":"B","value":200}]` {
			t.Fatalf("bar chart %v", bar)
		}
		// Horizontal bars: labels from the y axis, values are widths, axes' labels swapped as E2B does.
		barh := chartOf("plt.barh(['A', 'B'], [100, 200], label='Books Sold'); plt.xlabel('Books (units)'); plt.ylabel('Author')")
		if j, _ := json.Marshal(barh["elements"]); barh["type"] != "bar" || barh["x_label"] != "Author" || barh["y_label"] != "Books (units)" || barh["x_unit"] != nil || barh["y_unit"] != "units" ||
			string(j) != `[{"group":"Books Sold","label":"A","value":100},{"group":"Books Sold","label":"B","value":200}]` {
			t.Errorf("horizontal bar chart %v, elements %s", barh, j)
		}
		pie := chartOf("plt.pie([90, 10], labels=['No', 'Yes'])")
		if j, _ := json.Marshal(pie["elements"]); pie["type"] != "pie" || string(j) != `[{"angle":324,"label":"No","radius":1},{"angle":36,"label":"Yes","radius":1}]` {
			t.Fatalf("pie chart %v", pie)
		}
		if u := chartOf("plt.gca().add_patch(plt.Circle((0.5, 0.5), 0.2)); plt.title('C')"); u["type"] != "unknown" || u["title"] != "C" {
			t.Fatalf("unknown chart %v", u)
		}
		// E2B's box plot test: B's 76 is an outlier, so its lower whisker ends at 84.
		const scores = "data = {'Class A': [85, 90, 78, 92, 88], 'Class B': [95, 89, 76, 91, 84, 87], 'Class C': [75, 82, 88, 79, 86]}\n"
		const boxes = `[{"first_quartile":85,"label":"Class A","max":92,"median":88,"min":78,"outliers":[],"third_quartile":90},` +
			`{"first_quartile":84.75,"label":"Class B","max":95,"median":88,"min":84,"outliers":[76],"third_quartile":90.5},` +
			`{"first_quartile":79,"label":"Class C","max":88,"median":82,"min":75,"outliers":[],"third_quartile":86}]`
		for _, tc := range []struct{ name, code, xLabel, yLabel, yUnit string }{
			{"vertical", scores + "plt.boxplot(data.values(), labels=data.keys(), patch_artist=True)\nplt.title('Exam Scores Distribution'); plt.xlabel('Class'); plt.ylabel('Score')", "Class", "Score", ""},
			// Horizontal boxes: x_label is still the categories' axis, as E2B swaps it.
			{"horizontal", scores + "plt.boxplot(data.values(), labels=data.keys(), patch_artist=True, vert=False)\nplt.title('Exam Scores Distribution'); plt.ylabel('Class'); plt.xlabel('Score (points)')", "Class", "Score (points)", "points"},
		} {
			box := chartOf(tc.code)
			j, _ := json.Marshal(box["elements"])
			if box["type"] != "box_and_whisker" || box["title"] != "Exam Scores Distribution" || box["x_label"] != tc.xLabel || box["y_label"] != tc.yLabel ||
				box["x_unit"] != nil || (tc.yUnit == "" && box["y_unit"] != nil) || (tc.yUnit != "" && box["y_unit"] != tc.yUnit) || string(j) != boxes {
				t.Errorf("%s box plot: %v\nelements %s\nwant     %s", tc.name, box, j, boxes)
			}
		}
	})
	t.Run("bad requests are clear errors", func(t *testing.T) {
		for _, tc := range []struct {
			body   any
			status int
			msg    string
		}{
			{map[string]any{"code": "1", "language": "r"}, 400, `unsupported language "r": this code interpreter runs bash, python`},
			{map[string]any{"code": "1", "language": "python", "context_id": "x"}, 400, "Only one of context_id or language can be provided"},
			{map[string]any{"code": "1", "context_id": "nope"}, 404, "Context nope not found"},
			{map[string]any{"language": "python"}, 400, `missing "code"`},
			{map[string]any{"code": "1", "env_vars": map[string]string{"A=B": "x"}}, 400, `invalid environment variable name(s) ["A=B"]`},
		} {
			code, b := ts.call(t, http.MethodPost, "/execute", tc.body)
			if code != tc.status || !strings.Contains(string(b), tc.msg) {
				t.Errorf("%v: %d %q, want %d %q", tc.body, code, b, tc.status, tc.msg)
			}
		}
		code, b := ts.call(t, http.MethodPost, "/contexts", map[string]any{"language": "cobol"})
		if code != 400 || !strings.Contains(string(b), `unsupported language "cobol"`) {
			t.Errorf("create cobol context: %d %s", code, b)
		}
	})
}

func TestInterruptOnDisconnect(t *testing.T) {
	ts := startServer(t, "")
	for _, lang := range []string{"python", "bash"} {
		t.Run(lang, func(t *testing.T) {
			c := ts.createContext(t, map[string]any{"language": lang})
			setup, loop, check, want := "y = 3", "while True: pass", "y + 1", "4"
			if lang == "bash" {
				setup, loop, check, want = "y=3", "while true; do :; done", "echo $((y + 1))", "4\n"
			}
			parse(ts.run(t, map[string]any{"code": setup, "context_id": c.ID}))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ts.runCtx(t, ctx, map[string]any{"code": loop, "context_id": c.ID})
			start := time.Now()
			e := parse(ts.run(t, map[string]any{"code": check, "context_id": c.ID}))
			got := e.mainText()
			if lang == "bash" {
				got = strings.Join(e.stdout, "")
			}
			if got != want {
				t.Fatalf("after the interrupt: %q, want %q (state kept) — %+v", got, want, e)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("the next execution waited %v: the loop was not interrupted", d)
			}
		})
	}
}

func TestEnvVars(t *testing.T) {
	const token = "secret-token"
	envd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/envs" || r.Header.Get("X-Access-Token") != token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"TEST_ENV_VAR": "supertest"})
	}))
	defer envd.Close()
	ts := startServer(t, envd.URL)
	run := func(body map[string]any) execution {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/execute", bytes.NewReader(b))
		req.Header.Set("X-Access-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var lines []timedLine
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l line
			_ = json.Unmarshal(sc.Bytes(), &l)
			lines = append(lines, timedLine{line: l})
		}
		return parse(lines)
	}
	for _, tc := range []struct {
		lang, read string
		out        func(execution) string
	}{
		{"python", "import os; print(os.getenv('%s', 'default'))", stdoutText},
		{"bash", "echo \"${%s:-default}\"", stdoutText},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			c := ts.createContext(t, map[string]any{"language": tc.lang})
			read := func(name string, envs map[string]string) string {
				body := map[string]any{"code": strings.ReplaceAll(tc.read, "%s", name), "context_id": c.ID}
				if envs != nil {
					body["env_vars"] = envs
				}
				return tc.out(run(body))
			}
			steps := []struct {
				name string
				envs map[string]string
				want string
			}{
				{"FOO", map[string]string{"FOO": "it's \"bar\" $HOME"}, `it's "bar" $HOME`},
				{"FOO", nil, "default"}, // per-call vars do not leak
				{"TEST_ENV_VAR", nil, "supertest"},
				{"TEST_ENV_VAR", map[string]string{"TEST_ENV_VAR": "override"}, "override"},
				{"TEST_ENV_VAR", nil, "supertest"}, // the sandbox's value comes back
			}
			for i, s := range steps {
				if got := read(s.name, s.envs); got != s.want {
					t.Fatalf("step %d: %s = %q, want %q", i+1, s.name, got, s.want)
				}
			}
		})
	}
}

func TestContextsRunConcurrently(t *testing.T) {
	ts := startServer(t, "")
	a := ts.createContext(t, nil)
	b := ts.createContext(t, nil)
	sleep := func(id string, wg *sync.WaitGroup) {
		defer wg.Done()
		e := parse(ts.run(t, map[string]any{"code": "import time; time.sleep(2); 'ok'", "context_id": id}))
		if e.mainText() != "ok" {
			t.Errorf("context %s: %+v", id, e)
		}
	}
	measure := func(ids ...string) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go sleep(id, &wg)
		}
		wg.Wait()
		return time.Since(start)
	}
	if d := measure(a.ID, b.ID); d > 3600*time.Millisecond {
		t.Fatalf("two contexts took %v for 2 s each: not concurrent", d)
	}
	if d := measure(a.ID, a.ID); d < 4*time.Second {
		t.Fatalf("two executions in one context took %v: not one at a time", d)
	}
}

func TestContextLifecycle(t *testing.T) {
	ts := startServer(t, "")
	dir := t.TempDir()
	c := ts.createContext(t, map[string]any{"language": "python", "cwd": dir})
	if c.Language != "python" || c.Cwd != dir || len(c.ID) != 36 {
		t.Fatalf("created %+v", c)
	}
	if e := parse(ts.run(t, map[string]any{"code": "import os; os.getcwd()", "context_id": c.ID})); e.mainText() != dir {
		t.Fatalf("cwd %q, want %s", e.mainText(), dir)
	}
	bc := ts.createContext(t, map[string]any{"language": "bash", "cwd": dir})
	if e := parse(ts.run(t, map[string]any{"code": "pwd", "context_id": bc.ID})); strings.Join(e.stdout, "") != dir+"\n" {
		t.Fatalf("bash pwd %q", e.stdout)
	}
	code, body := ts.call(t, http.MethodPost, "/contexts", map[string]any{"cwd": filepath.Join(dir, "missing")})
	if code != 400 || !strings.Contains(string(body), "missing") {
		t.Fatalf("create with a missing cwd: %d %s", code, body)
	}

	list := func() []contextInfo {
		_, b := ts.call(t, http.MethodGet, "/contexts", nil)
		var l []contextInfo
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("list %s: %v", b, err)
		}
		return l
	}
	l := list()
	if len(l) != 3 || l[0].Language != "python" || l[0].Cwd != ts.cwd || l[1] != c || l[2].ID != bc.ID {
		t.Fatalf("list %+v: want the default python context, then ours in creation order", l)
	}

	parse(ts.run(t, map[string]any{"code": "x = 1", "context_id": c.ID}))
	if code, b := ts.call(t, http.MethodPost, "/contexts/"+c.ID+"/restart", nil); code != 200 {
		t.Fatalf("restart: %d %s", code, b)
	}
	e := parse(ts.run(t, map[string]any{"code": "x", "context_id": c.ID}))
	if e.err == nil || e.err["name"] != "NameError" || e.err["value"] != "name 'x' is not defined" {
		t.Fatalf("after restart: %+v, want NameError", e)
	}
	if e := parse(ts.run(t, map[string]any{"code": "import os; os.getcwd()", "context_id": c.ID})); e.mainText() != dir {
		t.Fatalf("cwd after restart %q (%+v)", e.mainText(), e)
	}

	if code, b := ts.call(t, http.MethodDelete, "/contexts/"+c.ID, nil); code != 200 {
		t.Fatalf("delete: %d %s", code, b)
	}
	for _, x := range list() {
		if x.ID == c.ID {
			t.Fatal("removed context still listed")
		}
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodDelete, "/contexts/" + c.ID},
		{http.MethodPost, "/contexts/" + c.ID + "/restart"},
	} {
		if code, _ := ts.call(t, tc.method, tc.path, nil); code != 404 {
			t.Errorf("%s %s after removal: %d, want 404", tc.method, tc.path, code)
		}
	}
	if code, _ := ts.call(t, http.MethodPost, "/execute", map[string]any{"code": "1", "context_id": c.ID}); code != 404 {
		t.Errorf("execute in a removed context: %d, want 404", code)
	}
}

func TestKernelCrashRestarts(t *testing.T) {
	ts := startServer(t, "")
	e := parse(ts.run(t, map[string]any{"code": "import os; os._exit(1)"}))
	if e.err == nil || e.err["name"] != "ContextRestarting" || !e.ended {
		t.Fatalf("crash: %+v", e)
	}
	if e := parse(ts.run(t, map[string]any{"code": "1 + 1"})); e.mainText() != "2" {
		t.Fatalf("after the crash: %+v", e)
	}
}
