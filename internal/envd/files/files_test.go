package files

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRoundTripBinary(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	content := make([]byte, 1<<16)
	for i := range content {
		content[i] = byte(i) // every byte value, including NUL and invalid UTF-8
	}
	path := filepath.Join(dir, "nested/new/bin.dat")
	res, body := h.upload(t, path, "", content, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	if got := entries(t, body); len(got) != 1 || got[0].Name != "bin.dat" || got[0].Type != "file" || got[0].Path != path || got[0].Metadata != nil {
		t.Fatalf("upload response = %+v", got)
	}
	res, body = h.do(t, call{method: http.MethodGet, query: url.Values{"path": {path}}})
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("download: status %d, %d bytes, equal=%v", res.StatusCode, len(body), bytes.Equal(body, content))
	}
	for k, want := range map[string]string{
		"Content-Type":        "application/octet-stream",
		"Content-Disposition": `attachment; filename=bin.dat`,
		"Content-Length":      "65536",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if res.Header.Get("Content-Encoding") != "" {
		t.Errorf("unrequested Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
}

func TestGzip(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	content := bytes.Repeat([]byte("compressible line\n"), 10000)

	// Upload gzip-compressed, as files.write(..., {gzip: true}) does.
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(content)
	zw.Close()
	path := filepath.Join(dir, "z.txt")
	res, body := h.upload(t, path, "", zbuf.Bytes(), http.Header{"Content-Encoding": {"gzip"}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("gzip upload: %d %s", res.StatusCode, body)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Fatal("gzip upload was not stored decompressed")
	}

	res, body = h.do(t, call{method: http.MethodGet, query: url.Values{"path": {path}}, header: http.Header{"Accept-Encoding": {"gzip"}}})
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip download: %d, Content-Encoding %q", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("gzip download decoded to %d bytes (err %v), want %d", len(got), err, len(content))
	}
	if len(body) >= len(content) {
		t.Errorf("gzip body %d bytes is not smaller than %d", len(body), len(content))
	}

	res, body = h.upload(t, path, "", []byte("not gzip"), http.Header{"Content-Encoding": {"gzip"}})
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("corrupt gzip upload: %d %s", res.StatusCode, body)
	}
	res, body = h.upload(t, path, "", []byte("x"), http.Header{"Content-Encoding": {"br"}})
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("brotli upload: %d %s", res.StatusCode, body)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Fatal("a rejected upload changed the file")
	}
}

func TestNegotiateEncoding(t *testing.T) {
	tests := []struct {
		header, want string
		fail         bool
	}{
		{"", encIdentity, false},
		{"gzip", encGzip, false},
		{"gzip, deflate, br", encGzip, false},
		{"br", encIdentity, false},
		{"identity;q=0.5, gzip;q=0.1", encIdentity, false},
		{"gzip;q=0", encIdentity, false},
		{"*;q=0", "", true},
		{"br, identity;q=0", "", true},
		{"*, identity;q=0", encGzip, false},
	}
	for _, tt := range tests {
		got, err := negotiateEncoding(tt.header)
		if (err != nil) != tt.fail || got != tt.want {
			t.Errorf("negotiateEncoding(%q) = %q, %v; want %q, fail=%v", tt.header, got, err, tt.want, tt.fail)
		}
	}
}

func TestDownloadErrors(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		query  url.Values
		user   string
		header http.Header
		status int
	}{
		{"missing path parameter", url.Values{}, "", nil, http.StatusBadRequest},
		{"nonexistent", url.Values{"path": {filepath.Join(dir, "nope")}}, "", nil, http.StatusNotFound},
		{"directory", url.Values{"path": {dir}}, "", nil, http.StatusBadRequest},
		{"unknown user", url.Values{"path": {secret}}, "no-such-user-hearth", nil, http.StatusUnauthorized},
		{"unknown user in query", url.Values{"path": {secret}, "username": {"no-such-user-hearth"}}, "", nil, http.StatusUnauthorized},
		{"permission denied", url.Values{"path": {secret}}, unprivileged, nil, http.StatusForbidden},
		{"permission denied via query user", url.Values{"path": {secret}, "username": {unprivileged}}, "", nil, http.StatusForbidden},
		{"no acceptable encoding", url.Values{"path": {secret}}, "", http.Header{"Accept-Encoding": {"br, identity;q=0"}}, http.StatusNotAcceptable},
		{"NUL in path", url.Values{"path": {dir + "/a\x00b"}}, "", nil, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := h.do(t, call{method: http.MethodGet, query: tt.query, user: tt.user, header: tt.header})
			if res.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, body, tt.status)
			}
			errorCode(t, res, body)
		})
	}
}

func TestUploadMultipart(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	h.env.SetDefaultWorkdir(dir)

	// Single file: path in the query and the filename, as files.write(path, data) sends it.
	single := filepath.Join(dir, "one.txt")
	body, ctype := multipartBody(t, map[string]string{single: "one"}, []string{single})
	res, out := h.do(t, call{method: http.MethodPost, query: url.Values{"path": {single}}, body: body, ctype: ctype})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("single: %d %s", res.StatusCode, out)
	}
	if got := entries(t, out); len(got) != 1 || got[0].Path != single {
		t.Fatalf("single response %+v", got)
	}

	// Several files without a path, as files.write([...]) sends them: each filename is the
	// destination, absolute or relative to the workdir, directories included.
	abs := filepath.Join(dir, "abs/a.txt")
	parts := map[string]string{abs: "A", "rel/dir/b.txt": "B", `q"uote.txt`: "Q"}
	order := []string{abs, "rel/dir/b.txt", `q"uote.txt`}
	body, ctype = multipartBody(t, parts, order)
	res, out = h.do(t, call{method: http.MethodPost, body: body, ctype: ctype})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("multi: %d %s", res.StatusCode, out)
	}
	got := entries(t, out)
	want := []string{abs, filepath.Join(dir, "rel/dir/b.txt"), filepath.Join(dir, `q"uote.txt`)}
	if len(got) != len(want) {
		t.Fatalf("multi response %+v", got)
	}
	for i, w := range want {
		if got[i].Path != w || got[i].Name != filepath.Base(w) || got[i].Type != "file" {
			t.Errorf("entry %d = %+v, want path %s", i, got[i], w)
		}
		if b, _ := os.ReadFile(w); string(b) != parts[order[i]] {
			t.Errorf("%s holds %q, want %q", w, b, parts[order[i]])
		}
	}
}

func TestUploadErrors(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	rootOnly := filepath.Join(dir, "root-only")
	if err := os.Mkdir(rootOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "root-file")
	if err := os.WriteFile(rootFile, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	dup, dupType := multipartBody(t, map[string]string{"a": "1", "b": "2"}, []string{"a", "b"})
	noFile, noFileType := multipartBody(t, nil, nil)

	tests := []struct {
		name   string
		c      call
		status int
	}{
		{"octet-stream without path", call{body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusBadRequest},
		{"unsupported content type", call{query: url.Values{"path": {filepath.Join(dir, "t")}}, body: strings.NewReader("x"), ctype: "text/plain"}, http.StatusUnsupportedMediaType},
		{"several parts to one path", call{query: url.Values{"path": {filepath.Join(dir, "same")}}, body: dup, ctype: dupType}, http.StatusBadRequest},
		{"no file part", call{query: url.Values{"path": {filepath.Join(dir, "none")}}, body: noFile, ctype: noFileType}, http.StatusBadRequest},
		{"onto a directory", call{query: url.Values{"path": {rootOnly}}, body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusBadRequest},
		{"parent is a file", call{query: url.Values{"path": {rootFile + "/x"}}, body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusBadRequest},
		{"unknown user", call{query: url.Values{"path": {filepath.Join(dir, "u")}, "username": {"no-such-user-hearth"}}, body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusUnauthorized},
		{"directory not writable", call{query: url.Values{"path": {filepath.Join(rootOnly, "f")}}, user: unprivileged, body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusForbidden},
		{"file not writable", call{query: url.Values{"path": {rootFile}}, user: unprivileged, body: strings.NewReader("x"), ctype: "application/octet-stream"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.method = http.MethodPost
			res, body := h.do(t, tt.c)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, body, tt.status)
			}
			errorCode(t, res, body)
		})
	}
	if b, _ := os.ReadFile(rootFile); string(b) != "original" {
		t.Errorf("a denied upload replaced %s: %q", rootFile, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "same")); !os.IsNotExist(err) {
		t.Errorf("a rejected multi-part upload left a file: %v", err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("temp files left behind: %v", l)
	}
}

func TestUploadOwnership(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	path := filepath.Join(dir, "n1/n2/owned.txt")
	res, body := h.upload(t, path, unprivileged, []byte("mine"), nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("upload as %s: %d %s", unprivileged, res.StatusCode, body)
	}
	for _, p := range []string{filepath.Join(dir, "n1"), filepath.Join(dir, "n1/n2"), path} {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 {
			t.Errorf("%s owned by uid %d, want nobody (65534)", p, st.Uid)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != newFileMode {
		t.Errorf("new file mode %v, want %v", fi.Mode().Perm(), os.FileMode(newFileMode))
	}
	// Overwriting keeps the existing mode.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if res, body := h.upload(t, path, unprivileged, []byte("again"), nil); res.StatusCode != http.StatusOK {
		t.Fatalf("overwrite: %d %s", res.StatusCode, body)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("overwrite changed mode to %v", fi.Mode().Perm())
	}
}

func TestUploadMetadata(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "m.txt")
	res, body := h.upload(t, path, "", []byte("x"), http.Header{"X-Metadata-Team": {"infra"}, "X-Metadata-Build-Id": {"42"}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if got := entries(t, body); len(got) != 1 || got[0].Metadata["team"] != "infra" || got[0].Metadata["build-id"] != "42" {
		t.Fatalf("response %+v", got)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(path, "user.e2b.team", buf)
	if err != nil || string(buf[:n]) != "infra" {
		t.Fatalf("xattr user.e2b.team = %q, %v", buf[:n], err)
	}
	// A new upload replaces the metadata: keys it does not send are gone.
	if res, body := h.upload(t, path, "", []byte("y"), nil); res.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if _, err := unix.Getxattr(path, "user.e2b.team", buf); err != unix.ENODATA {
		t.Errorf("stale metadata after overwrite: err = %v", err)
	}

	tests := []struct {
		name   string
		header http.Header
		status int
	}{
		{"key at the limit", http.Header{"X-Metadata-" + strings.Repeat("k", maxMetadataKey): {"v"}}, http.StatusOK},
		{"key too long", http.Header{"X-Metadata-" + strings.Repeat("k", maxMetadataKey+1): {"v"}}, http.StatusBadRequest},
		{"total too large", http.Header{"X-Metadata-A": {strings.Repeat("v", 2100)}, "X-Metadata-B": {strings.Repeat("v", 2100)}}, http.StatusBadRequest},
		{"non-printable value", http.Header{"X-Metadata-A": {"tab\there"}}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := h.upload(t, filepath.Join(dir, "limits"), "", []byte("x"), tt.header)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, body, tt.status)
			}
		})
	}
}

// TestAtomicOverwrite checks a concurrent reader only ever sees one whole version of a file
// while it is overwritten again and again.
func TestAtomicOverwrite(t *testing.T) {
	h := newHarness(t)
	path := filepath.Join(t.TempDir(), "hot")
	versions := [][]byte{bytes.Repeat([]byte("a"), 1<<20), bytes.Repeat([]byte("b"), 1<<20)}
	if err := os.WriteFile(path, versions[0], 0o644); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, bad atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(path)
			reads.Add(1)
			if err != nil || (!bytes.Equal(b, versions[0]) && !bytes.Equal(b, versions[1])) {
				bad.Add(1)
			}
		}
	}()
	for i := range 20 {
		if res, body := h.upload(t, path, "", versions[i%2], nil); res.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 || reads.Load() == 0 {
		t.Fatalf("%d of %d reads saw a partial or missing file", bad.Load(), reads.Load())
	}
}

// TestLargeStreamingUpload sends 50 MiB through a pipe and checks the data reaches disk
// before the request body ends (the handler streams rather than buffering), then downloads
// it back.
func TestLargeStreamingUpload(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "big.bin")
	const size = 50 << 20
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	sum := sha256.New()

	pr, pw := io.Pipe()
	done := make(chan struct{})
	var res *http.Response
	var body []byte
	var reqErr error
	go func() { // no t.Fatal here: this is not the test goroutine
		defer close(done)
		r, err := http.NewRequest(http.MethodPost, h.url+"?"+url.Values{"path": {path}}.Encode(), pr)
		if err != nil {
			reqErr = err
			return
		}
		r.Header.Set("Content-Type", "application/octet-stream")
		if res, reqErr = h.client.Do(r); reqErr == nil {
			body, reqErr = io.ReadAll(res.Body)
			res.Body.Close()
		}
	}()
	for i := 0; i < size/len(chunk); i++ {
		if i == size/len(chunk)/2 {
			// Half the body is sent: the temp file must already hold a good part of it.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var biggest int64
				for _, name := range leftovers(t, dir) {
					if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Size() > biggest {
						biggest = fi.Size()
					}
				}
				if biggest >= 16<<20 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("temp file holds %d bytes after 25 MiB were sent: the upload is buffered", biggest)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("destination visible before the upload finished: %v", err)
			}
		}
		sum.Write(chunk)
		if _, err := pw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	pw.Close()
	<-done
	if reqErr != nil {
		t.Fatal(reqErr)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	want := sum.Sum(nil)

	r, err := http.NewRequest(http.MethodGet, h.url+"?"+url.Values{"path": {path}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dres, err := h.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer dres.Body.Close()
	got := sha256.New()
	n, err := io.Copy(got, dres.Body)
	if err != nil || n != size || !bytes.Equal(got.Sum(nil), want) || dres.ContentLength != size {
		t.Fatalf("download: %d bytes (Content-Length %d), err %v, checksum match %v", n, dres.ContentLength, err, bytes.Equal(got.Sum(nil), want))
	}
}

// TestInterruptedUpload checks a body that fails part-way leaves neither a new file nor a
// temp file, and leaves an existing file whole.
func TestInterruptedUpload(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "fresh"), existing} {
		pr, pw := io.Pipe()
		go func() {
			pw.Write(make([]byte, 1<<20))
			pw.CloseWithError(io.ErrUnexpectedEOF) // the client dies mid-body
		}()
		r, err := http.NewRequest(http.MethodPost, h.url+"?"+url.Values{"path": {path}}.Encode(), pr)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/octet-stream")
		r.ContentLength = 4 << 20 // promise more than is sent
		if res, err := h.client.Do(r); err == nil {
			res.Body.Close()
		}
		// The client has given up; the server finds out when its body read fails, and only
		// then cleans up. Looking before it is done would see nothing yet, or a file it is
		// about to remove.
		select {
		case <-h.served:
		case <-time.After(10 * time.Second):
			t.Fatal("the upload handler did not return within 10 s of the client giving up")
		}
		if l := leftovers(t, dir); len(l) > 0 {
			t.Fatalf("temp files left after an interrupted upload: %v", l)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "fresh")); !os.IsNotExist(err) {
		t.Errorf("interrupted upload created the file: %v", err)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Errorf("interrupted upload changed the existing file to %d bytes", len(b))
	}
}

func TestUploadDiskFull(t *testing.T) {
	h := newHarness(t)
	dir := mountTiny(t, "size=1m")
	res, body := h.upload(t, filepath.Join(dir, "too-big"), "", make([]byte, 2<<20), nil)
	if res.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("status %d (%s), want 507", res.StatusCode, body)
	}
	errorCode(t, res, body)
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("temp files left on the full disk: %v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "too-big")); !os.IsNotExist(err) {
		t.Errorf("partial file left: %v", err)
	}
}

// TestUploadLongName: a file name as long as the filesystem allows can be uploaded and
// overwritten; its staging name is shortened to fit NAME_MAX.
func TestUploadLongName(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("n", 255))
	for _, content := range []string{"first", "second"} {
		if res, body := h.upload(t, path, "", []byte(content), nil); res.StatusCode != http.StatusOK {
			t.Fatalf("upload %q: %d %s", content, res.StatusCode, body)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Fatalf("read back %q, %v; want %q", b, err, content)
		}
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("staging files left: %v", l)
	}
}
