package files

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// download serves GET /files?path=P: the file's bytes, gzip-compressed when the client asks
// for it. The file is opened as the user, so the kernel decides whether they may read it.
func (h *Handler) download(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("path") == "" {
		h.fail(w, r, &httpError{http.StatusBadRequest, errors.New("missing path query parameter: GET /files?path=<file>")})
		return
	}
	u, _, herr := h.access(r)
	if herr != nil {
		h.fail(w, r, herr)
		return
	}
	path, herr := h.resolve(q.Get("path"), u)
	if herr != nil {
		h.fail(w, r, herr)
		return
	}
	f, fi, herr := openForRead(u, path)
	if herr != nil {
		h.fail(w, r, herr)
		return
	}
	defer f.Close()

	enc, err := negotiateEncoding(r.Header.Get("Accept-Encoding"))
	if err != nil {
		h.fail(w, r, &httpError{http.StatusNotAcceptable, err})
		return
	}
	// Ranges and conditional requests need http.ServeContent, which cannot compress.
	if r.Header.Get("Range") != "" || r.Header.Get("If-Range") != "" {
		enc = encIdentity
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": filepath.Base(path)}))
	hdr.Set("Vary", "Accept-Encoding")

	if enc == encIdentity {
		http.ServeContent(w, r, "", fi.ModTime(), f)
		return
	}
	hdr.Set("Content-Encoding", encGzip)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if _, err := io.Copy(zw, f); err != nil {
		// The status is sent; the client sees a truncated gzip stream, which fails its check.
		h.logger.Warn("gzip download interrupted", "path", path, "err", err)
		return
	}
	if err := zw.Close(); err != nil {
		h.logger.Warn("gzip download interrupted", "path", path, "err", err)
	}
}

// openForRead opens a regular file as u. Directories and special files are 400: a FIFO would
// block the request and a directory has no content to send.
func openForRead(u identity.User, path string) (*os.File, os.FileInfo, *httpError) {
	var f *os.File
	var fi os.FileInfo
	err := identity.Do(u, func() error {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if st.IsDir() {
			return &httpError{http.StatusBadRequest, fmt.Errorf("path %s is a directory; download the files in it one by one", path)}
		}
		if !st.Mode().IsRegular() {
			return &httpError{http.StatusBadRequest, fmt.Errorf("path %s is not a regular file (%s)", path, st.Mode().Type())}
		}
		f, err = os.Open(path)
		if err != nil {
			return err
		}
		fi, err = f.Stat()
		if err != nil {
			_ = f.Close()
		}
		return err
	})
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, nil, he
		}
		return nil, nil, statusFor("read", path, err)
	}
	return f, fi, nil
}
