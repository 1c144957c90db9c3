package files

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearthsh/hearth/internal/envd/identity"
	"github.com/hearthsh/hearth/internal/envd/sandboxenv"
)

const unprivileged = "nobody"

type harness struct {
	env    *sandboxenv.Env
	url    string
	client *http.Client
	// served gets a value each time the handler has returned, for tests whose client gives
	// up before the server is done (an interrupted upload cleans up after the client left).
	served chan struct{}
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := sandboxenv.New("root")
	served := make(chan struct{}, 1024)
	files := New(env, slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	mux.Handle("/files", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			select {
			case served <- struct{}{}:
			default:
			}
		}()
		files.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// DisableCompression so tests see Content-Encoding exactly as the server sent it.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	return &harness{env: env, url: srv.URL + "/files", client: client, served: served}
}

type call struct {
	method  string
	query   url.Values
	user    string // Basic auth username, "" for none
	header  http.Header
	body    io.Reader
	ctype   string
	wantErr bool
}

func (h *harness) do(t *testing.T, c call) (*http.Response, []byte) {
	t.Helper()
	r, err := http.NewRequest(c.method, h.url+"?"+c.query.Encode(), c.body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		r.Header[k] = v
	}
	if c.ctype != "" {
		r.Header.Set("Content-Type", c.ctype)
	}
	if c.user != "" {
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.user+":")))
	}
	res, err := h.client.Do(r)
	if c.wantErr {
		if err == nil {
			res.Body.Close()
			t.Fatal("request succeeded, want a transport error")
		}
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

// upload posts content as application/octet-stream.
func (h *harness) upload(t *testing.T, path, user string, content []byte, hdr http.Header) (*http.Response, []byte) {
	return h.do(t, call{method: http.MethodPost, query: url.Values{"path": {path}}, user: user, body: bytes.NewReader(content), ctype: "application/octet-stream", header: hdr})
}

// multipartBody builds a form with one "file" part per filename.
func multipartBody(t *testing.T, parts map[string]string, order []string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, name := range order {
		// CreateFormFile would escape nothing but keep the full name; write the header
		// by hand to mirror undici, which keeps directories in the filename.
		hdr := make(map[string][]string)
		hdr["Content-Disposition"] = []string{`form-data; name="file"; filename="` + strings.ReplaceAll(name, `"`, "%22") + `"`}
		hdr["Content-Type"] = []string{"application/octet-stream"}
		w, err := mw.CreatePart(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, parts[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

type entry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Path     string            `json:"path"`
	Metadata map[string]string `json:"metadata"`
}

func entries(t *testing.T, body []byte) []entry {
	t.Helper()
	var out []entry
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("response %q is not a JSON entry list: %v", body, err)
	}
	return out
}

// errorCode decodes E2B's error body and checks its code matches the status.
func errorCode(t *testing.T, res *http.Response, body []byte) int {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if e.Code != res.StatusCode || e.Message == "" {
		t.Fatalf("error body %+v does not match status %d", e, res.StatusCode)
	}
	return e.Code
}

func sharedDir(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	if !identity.IsRoot() {
		t.Skip("needs root to act as other users")
	}
}

// leftovers lists upload temp files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".upload-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func mountTiny(t *testing.T, opts string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
