package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

const templatesDefinition = "templates built through the API with the Go SDK's BuildTemplate (what " +
	"`hearth template build` runs): build = from the base template, one RUN and a COPY of a " +
	"one-file context dir, from the request to status ready (the copy of base's root filesystem " +
	"included); the same recipe with the start command `python3 -m http.server 8000` and a ready " +
	"command waiting for port 8000 also boots the template and takes its start snapshot. " +
	"create → first HTTP 200 = from Client.Create until a GET / of port 8000 through the public " +
	"proxy (routed by headers, polled every 20 ms) answers 200: WITH the start snapshot the sandbox " +
	"is restored with the server running; WITHOUT it (the template without a start command, " +
	"created as the agent's create mode makes it, cold boot in hearth dev) the server is started " +
	"after create by a background command. The two alternate, one sandbox at a time, each killed " +
	"after (not timed), after one unrecorded warm-up of each."

// Templates of this section: the same recipe, with and without a start command.
const (
	benchTemplatePlain = "bench-http"
	benchTemplateStart = "bench-http-start"
	benchHTTPPort      = 8000
	benchServerCmd     = "python3 -m http.server 8000"
	// benchReadyCmd waits for the port with bash alone: the base template has no ss.
	benchReadyCmd = ": </dev/tcp/127.0.0.1/8000"
)

func runTemplates(ctx context.Context, e *env, creates int, s *Section) error {
	ctxDir, err := os.MkdirTemp("", "hearth-bench-context-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctxDir)
	if err := os.MkdirAll(filepath.Join(ctxDir, "www"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "www", "index.html"), []byte("<p>hearth bench</p>\n"), 0o644); err != nil {
		return err
	}
	recipe := hearth.TemplateBuild{
		FromTemplate: hearth.DefaultTemplate, ContextDir: ctxDir, MemoryMB: 512, CPUCount: 1,
		Steps: []hearth.TemplateStep{
			{Type: "RUN", Args: []string{"mkdir -p /srv && echo built-by-bench > /srv/marker", "root"}},
			{Type: "COPY", Args: []string{"www", "/srv/www", "", ""}},
			{Type: "WORKDIR", Args: []string{"/srv/www"}},
		},
	}
	plain := recipe
	plain.Name = benchTemplatePlain
	d, err := benchBuild(ctx, e, plain)
	if err != nil {
		return err
	}
	s.add("build: base + RUN + COPY", ms(d), "ms")
	withStart := recipe
	withStart.Name, withStart.StartCmd, withStart.ReadyCmd = benchTemplateStart, benchServerCmd, benchReadyCmd
	if d, err = benchBuild(ctx, e, withStart); err != nil {
		return err
	}
	s.add("build: the same + start command and start snapshot", ms(d), "ms")

	client := newHTTP1Client(2)
	var with, without samples
	for i := range creates + 1 {
		w, err := createToHTTP(ctx, e, client, benchTemplateStart, false)
		if err != nil {
			return fmt.Errorf("create %d of %s: %w", i, benchTemplateStart, err)
		}
		wo, err := createToHTTP(ctx, e, client, benchTemplatePlain, true)
		if err != nil {
			return fmt.Errorf("create %d of %s: %w", i, benchTemplatePlain, err)
		}
		if i > 0 { // the first of each is the warm-up
			with, without = append(with, w), append(without, wo)
		}
	}
	s.add(fmt.Sprintf("create → first HTTP 200 WITH start snapshot p50 (n=%d)", creates), with.pct(50), "ms")
	s.add(fmt.Sprintf("create → first HTTP 200 WITH start snapshot p90 (n=%d)", creates), with.pct(90), "ms")
	s.add(fmt.Sprintf("create → first HTTP 200 WITHOUT (server started after create) p50 (n=%d)", creates), without.pct(50), "ms")
	s.add(fmt.Sprintf("create → first HTTP 200 WITHOUT (server started after create) p90 (n=%d)", creates), without.pct(90), "ms")
	return nil
}

// benchBuild builds b through the API and returns how long it took.
func benchBuild(ctx context.Context, e *env, b hearth.TemplateBuild) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	var last string
	_, err := e.client.BuildTemplate(ctx, b, hearth.BuildTemplateOptions{OnLog: func(l hearth.BuildLogEntry) { last = l.Message }})
	if err != nil {
		return 0, fmt.Errorf("build %s: %w (last log line: %s)", b.Name, err, last)
	}
	return time.Since(start), nil
}

// createToHTTP times a create of tmpl until port 8000 answers 200 through the proxy; with
// startServer the server is started by a background command once the create returns. The
// sandbox is killed after.
func createToHTTP(ctx context.Context, e *env, client *http.Client, tmpl string, startServer bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	sb, err := e.createFrom(ctx, tmpl, 5*time.Minute)
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	defer func() { _ = e.kill(context.WithoutCancel(ctx), sb.ID) }()
	if startServer {
		// Only the deadline of its context ends a started command: this one has none, and
		// following its output stops with cancel.
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		if _, err := sb.Commands.Start(sctx, benchServerCmd, &hearth.CommandOptions{Cwd: "/srv/www", NoCapture: true}); err != nil {
			return 0, fmt.Errorf("start the server in %s: %w", sb.ID, err)
		}
	}
	info := sb.Info()
	for {
		ok, err := httpOK(ctx, client, info)
		if ok {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("port %d of %s never answered 200: %v", benchHTTPPort, sb.ID, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// httpOK sends GET / to the sandbox's port 8000 through the public proxy, routed by headers.
func httpOK(ctx context.Context, client *http.Client, sb hearth.CreatedSandbox) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimRight(proxyBase, "/")+"/", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("E2b-Sandbox-Id", sb.SandboxID)
	req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(benchHTTPPort))
	if sb.TrafficAccessToken != "" {
		req.Header.Set("E2b-Traffic-Access-Token", sb.TrafficAccessToken)
	}
	res, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s: %s", res.Status, body)
	}
	return strings.Contains(string(body), "hearth bench"), nil
}
