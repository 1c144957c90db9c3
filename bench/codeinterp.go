package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const codeinterpDefinition = "the code interpreter (template code-interpreter-v1, built first with E2B's " +
	"Template SDK by e2e/codeinterp-template.mjs; not timed): create → first runCode = from " +
	"Client.Create until the first POST /execute of `1` through the public proxy has streamed its " +
	"end_of_execution (what @e2b/code-interpreter's Sandbox.create then runCode wait for), one " +
	"sandbox after another, each killed after (not timed); runCode('1') = that request's round " +
	"trip in one running sandbox, one after another, on a kept-alive connection as the SDK's fetch " +
	"keeps it, after 5 unrecorded warm-up runs."

const codeinterpTemplate = "code-interpreter-v1"

// codeinterpPort is the code interpreter server's port in the sandbox (E2B's JUPYTER_PORT).
const codeinterpPort = 49999

func runCodeinterp(ctx context.Context, e *env, creates, runs int, s *Section) error {
	start := time.Now()
	if err := buildCodeinterpTemplate(ctx, e.cfg); err != nil {
		return err
	}
	s.add("code-interpreter-v1 template build (not in the figures below)", ms(time.Since(start)), "ms")

	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	var first, created, firstRun samples
	for i := range creates {
		c, r, err := createThenRunCode(ctx, e, client)
		if err != nil {
			return fmt.Errorf("create %d: %w", i, err)
		}
		first, created, firstRun = append(first, c+r), append(created, c), append(firstRun, r)
	}
	s.add(fmt.Sprintf("create → first runCode p50 (n=%d)", creates), first.pct(50), "ms")
	s.add(fmt.Sprintf("create → first runCode p90 (n=%d)", creates), first.pct(90), "ms")
	s.add("  of which Client.Create p50", created.pct(50), "ms")
	s.add("  of which the first runCode p50", firstRun.pct(50), "ms")

	sb, err := e.createFrom(ctx, codeinterpTemplate, 10*time.Minute)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer func() { _ = e.kill(context.WithoutCancel(ctx), sb.ID) }()
	var rt samples
	for i := range runs + 5 {
		d, err := timeRunCode(ctx, client, sb.Info(), "1")
		if err != nil {
			return fmt.Errorf("runCode %d in %s: %w", i, sb.ID, err)
		}
		if i >= 5 {
			rt = append(rt, d)
		}
	}
	s.add(fmt.Sprintf("runCode('1') p50 (n=%d)", runs), rt.pct(50), "ms")
	s.add(fmt.Sprintf("runCode('1') p99 (n=%d)", runs), rt.pct(99), "ms")
	return nil
}

// buildCodeinterpTemplate builds code-interpreter-v1 through the API with the e2e suite's
// recipe and E2B's Template SDK, as a user would (node and e2e/node_modules are needed).
func buildCodeinterpTemplate(ctx context.Context, c config) error {
	script := filepath.Join(c.Repo, "e2e", "codeinterp-template.mjs")
	if _, err := os.Stat(filepath.Join(c.Repo, "e2e", "node_modules", "e2b")); err != nil {
		return fmt.Errorf("the e2b SDK is not installed for %s (cd e2e && npm ci): %w", script, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "E2B_API_URL="+c.APIURL, "E2B_API_KEY="+c.APIKey,
		"CODEINTERP_BIN="+filepath.Join(c.Repo, "bin", "codeinterp"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build %s (node %s): %w\n%s", codeinterpTemplate, script, err, out)
	}
	return nil
}

// createThenRunCode times a create and then the first runCode in the new sandbox, and kills
// it.
func createThenRunCode(ctx context.Context, e *env, client *http.Client) (create, run time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	sb, err := e.createFrom(ctx, codeinterpTemplate, 5*time.Minute)
	if err != nil {
		return 0, 0, fmt.Errorf("create: %w", err)
	}
	create = time.Since(start)
	run, err = timeRunCode(ctx, client, sb.Info(), "1")
	if kerr := e.kill(ctx, sb.ID); kerr != nil && err == nil {
		err = kerr
	}
	return create, run, err
}

// timeRunCode sends what @e2b/code-interpreter's runCode sends (POST /execute through the
// proxy, routed by headers, with the envd token the server passes on to envd) and reads
// the NDJSON stream to end_of_execution; the result must be the cell's value.
func timeRunCode(ctx context.Context, client *http.Client, sb hearth.CreatedSandbox, code string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"code": code})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(proxyBase, "/")+"/execute", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("E2b-Sandbox-Id", sb.SandboxID)
	req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(codeinterpPort))
	req.Header.Set("X-Access-Token", sb.EnvdAccessToken)
	if sb.TrafficAccessToken != "" {
		req.Header.Set("E2b-Traffic-Access-Token", sb.TrafficAccessToken)
	}
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return 0, fmt.Errorf("POST /execute: %s: %s", res.Status, b)
	}
	var text string
	ended := false
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var l struct {
			Type  string `json:"type"`
			Text  string `json:"text"`
			Name  string `json:"name"`
			Value string `json:"value"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return 0, fmt.Errorf("stream line %q: %w", sc.Bytes(), err)
		}
		switch l.Type {
		case "result":
			text = l.Text
		case "error":
			return 0, fmt.Errorf("%s: %s: %s", code, l.Name, l.Value)
		case "end_of_execution":
			ended = true
		}
	}
	// The SDK's runCode returns when the body ends, after end_of_execution.
	d := time.Since(start)
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read stream: %w", err)
	}
	if !ended {
		return 0, fmt.Errorf("stream ended without end_of_execution")
	}
	if text != code {
		return 0, fmt.Errorf("%s gave result %q", code, text)
	}
	return d, nil
}
