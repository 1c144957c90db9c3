package files

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hearthsh/hearth/internal/envd/auth"
)

const testToken = "secret-token"

// signed returns a query signed for path, op and user, the way the JS SDK's downloadUrl and
// uploadUrl build one.
func signed(path, op, user string) url.Values {
	q := url.Values{"signature": {auth.Sign(path, op, user, testToken, 0)}}
	if path != "" {
		q.Set("path", path)
	}
	if user != "" {
		q.Set("username", user)
	}
	return q
}

// rootOnly writes a file only root may read.
func rootOnly(t *testing.T) string {
	t.Helper()
	p := filepath.Join(sharedDir(t), "secret")
	if err := os.WriteFile(p, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A signed URL acts as the user it is signed for, whatever the Authorization header says.
func TestSignedDownloadIsBoundToItsUser(t *testing.T) {
	h := newHarness(t)
	h.env.SetAccessToken(testToken)
	secret := rootOnly(t)
	tests := []struct {
		name   string
		query  url.Values
		user   string // Basic auth username
		status int
	}{
		{"signed for nobody", signed(secret, auth.OpRead, unprivileged), "", http.StatusForbidden},
		{"signed for nobody, Basic root", signed(secret, auth.OpRead, unprivileged), "root", http.StatusUnauthorized},
		{"signed for nobody, Basic nobody", signed(secret, auth.OpRead, unprivileged), unprivileged, http.StatusForbidden},
		{"signed for the default user (root), Basic nobody", signed(secret, auth.OpRead, ""), unprivileged, http.StatusUnauthorized},
		{"signed for the default user (root)", signed(secret, auth.OpRead, ""), "", http.StatusOK},
		{"signed for root", signed(secret, auth.OpRead, "root"), "root", http.StatusOK},
		{"path repeated after the signed one", func() url.Values {
			q := signed(filepath.Join(filepath.Dir(secret), "other"), auth.OpRead, unprivileged)
			q.Add("path", secret)
			return q
		}(), "root", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := h.do(t, call{method: http.MethodGet, query: tt.query, user: tt.user})
			if res.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, body, tt.status)
			}
			if tt.status != http.StatusOK {
				errorCode(t, res, body)
			} else if string(body) != "root's" {
				t.Fatalf("body %q", body)
			}
		})
	}
}

// A write-signed URL writes its signed path and nothing else: a part's filename cannot move
// the destination, and a URL signed without a path takes plain file names into the default
// directory only.
func TestSignedUploadStaysWithinTheSignedPath(t *testing.T) {
	h := newHarness(t)
	h.env.SetAccessToken(testToken)
	dir := sharedDir(t)
	workdir := filepath.Join(dir, "work")
	if err := os.Mkdir(workdir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(workdir, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	h.env.SetDefaultWorkdir(workdir)
	outside := filepath.Join(dir, "outside")
	tests := []struct {
		name    string
		query   url.Values
		parts   []string // filenames, in order
		status  int
		written []string // relative to dir
	}{
		{"signed path wins over the filename", signed(filepath.Join(workdir, "dest"), auth.OpWrite, unprivileged), []string{outside}, http.StatusOK, []string{"work/dest"}},
		{"signed path takes one part", signed(filepath.Join(workdir, "one"), auth.OpWrite, unprivileged), []string{"a", "b"}, http.StatusBadRequest, nil},
		{"no path: plain names into the workdir", signed("", auth.OpWrite, unprivileged), []string{"p1", "p2"}, http.StatusOK, []string{"work/p1", "work/p2"}},
		{"no path: directories refused", signed("", auth.OpWrite, unprivileged), []string{"sub/f"}, http.StatusForbidden, nil},
		{"no path: dot-dot refused", signed("", auth.OpWrite, unprivileged), []string{"../outside"}, http.StatusForbidden, nil},
		{"no path: absolute refused", signed("", auth.OpWrite, unprivileged), []string{outside}, http.StatusForbidden, nil},
		{"no path: home refused", signed("", auth.OpWrite, unprivileged), []string{"~"}, http.StatusForbidden, nil},
		{"no path: a bad part after a good one writes nothing", signed("", auth.OpWrite, unprivileged), []string{"good", "../outside"}, http.StatusForbidden, nil},
		{"path differing from the signed one", func() url.Values {
			q := signed("", auth.OpWrite, unprivileged)
			q.Set("path", outside)
			return q
		}(), []string{"x"}, http.StatusUnauthorized, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			contents := map[string]string{}
			for _, p := range tt.parts {
				contents[p] = "data " + p
			}
			body, ctype := multipartBody(t, contents, tt.parts)
			res, rb := h.do(t, call{method: http.MethodPost, query: tt.query, body: body, ctype: ctype})
			if res.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, rb, tt.status)
			}
			if _, err := os.Lstat(outside); err == nil {
				t.Fatalf("%s was written", outside)
			}
			if _, err := os.Lstat(filepath.Join(workdir, "good")); err == nil {
				t.Fatalf("a part of a refused upload was written")
			}
			for _, rel := range tt.written {
				var st syscall.Stat_t
				if err := syscall.Stat(filepath.Join(dir, rel), &st); err != nil {
					t.Fatalf("%s not written: %v", rel, err)
				}
				if st.Uid != 65534 {
					t.Errorf("%s owned by uid %d, want nobody", rel, st.Uid)
				}
			}
		})
	}
}

// An upload signed for a path as root may still be sent as octet-stream, the SDK's streaming
// form, and lands on that path.
func TestSignedOctetStreamUpload(t *testing.T) {
	h := newHarness(t)
	h.env.SetAccessToken(testToken)
	dest := filepath.Join(sharedDir(t), "streamed")
	res, body := h.do(t, call{method: http.MethodPost, query: signed(dest, auth.OpWrite, unprivileged),
		body: bytes.NewReader([]byte("s")), ctype: "application/octet-stream"})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s)", res.StatusCode, body)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dest, &st); err != nil || st.Uid != 65534 {
		t.Fatalf("stat %s: uid %d, %v", dest, st.Uid, err)
	}
}
