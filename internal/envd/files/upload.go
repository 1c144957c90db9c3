package files

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// writtenEntry is one element of the upload response, the shape E2B's envd returns and the
// SDK's files.write hands back.
type writtenEntry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Path     string            `json:"path"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// upload serves POST /files. The body is either application/octet-stream (the file itself;
// path is required) or multipart/form-data with "file" parts. A multipart part is written to
// path when it is given, else to the part's filename (which may be absolute or relative to
// the workdir, and keeps its directories); that is how the SDK's files.write sends several
// files in one request. Files are committed only after the whole body is read, so a request
// that fails part-way writes nothing.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) {
	defer r.Body.Close()
	q := r.URL.Query()
	ctype, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.Header.Get("Content-Type") == "" {
		ctype, err = "application/octet-stream", nil
	}
	if err != nil {
		h.fail(w, r, &httpError{http.StatusBadRequest, fmt.Errorf("invalid Content-Type: %w", err)})
		return
	}
	if ctype != "multipart/form-data" && ctype != "application/octet-stream" {
		h.fail(w, r, &httpError{http.StatusUnsupportedMediaType,
			fmt.Errorf("unsupported Content-Type %q; send multipart/form-data or application/octet-stream", ctype)})
		return
	}
	md, err := parseMetadata(r.Header)
	if err != nil {
		h.fail(w, r, &httpError{http.StatusBadRequest, err})
		return
	}
	u, grant, herr := h.access(r)
	if herr != nil {
		h.fail(w, r, herr)
		return
	}
	body, err := requestBody(r)
	if err != nil {
		h.fail(w, r, &httpError{http.StatusBadRequest, err})
		return
	}
	defer body.Close()

	var files []*staged
	defer func() {
		for _, s := range files {
			s.discard() // no-op for committed files: their temp name is gone
		}
	}()
	if ctype == "application/octet-stream" {
		if q.Get("path") == "" {
			h.fail(w, r, &httpError{http.StatusBadRequest, errors.New("missing path query parameter: an application/octet-stream upload needs POST /files?path=<file>")})
			return
		}
		dest, herr := h.resolve(q.Get("path"), u)
		if herr == nil {
			var s *staged
			if s, herr = stage(u, dest, body, md); herr == nil {
				files = append(files, s)
			}
		}
		if herr != nil {
			h.fail(w, r, herr)
			return
		}
	} else {
		// A URL signed without a path names no destination; it covers files by plain name
		// in the default directory, as a browser form or curl -F sends them.
		plainNames := grant.Signed && q.Get("path") == ""
		if files, herr = h.stageParts(u, multipart.NewReader(body, params["boundary"]), q.Get("path"), plainNames, md); herr != nil {
			h.fail(w, r, herr)
			return
		}
	}

	out := make([]writtenEntry, 0, len(files))
	for _, s := range files {
		if herr := s.commit(); herr != nil {
			h.fail(w, r, herr)
			return
		}
		out = append(out, writtenEntry{Name: filepath.Base(s.dest), Type: "file", Path: s.dest, Metadata: md})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(out)
}

// stageParts stages every "file" part of a multipart body. On error the parts staged so far
// are discarded.
//
// With plainNames set each part's filename must be a plain file name, written into the default
// directory; directories, "..", "~" and absolute paths are refused.
func (h *Handler) stageParts(u identity.User, mr *multipart.Reader, path string, plainNames bool, md map[string]string) ([]*staged, *httpError) {
	var files []*staged
	fail := func(herr *httpError) ([]*staged, *httpError) {
		for _, s := range files {
			s.discard()
		}
		return nil, herr
	}
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(&httpError{http.StatusBadRequest, fmt.Errorf("read multipart body: %w", err)})
		}
		if part.FormName() != "file" {
			_ = part.Close()
			continue
		}
		target := path
		if target == "" {
			target = partFilename(part)
			if target == "" {
				_ = part.Close()
				return fail(&httpError{http.StatusBadRequest, errors.New("a file part has no filename and no path query parameter was given; name the destination in one of them")})
			}
			if plainNames && !isPlainName(target) {
				_ = part.Close()
				return fail(&httpError{http.StatusForbidden, fmt.Errorf(
					"file part named %q: a URL signed without a path uploads plain file names into the default directory only; sign the URL for the destination path", target)})
			}
		}
		dest, herr := h.resolve(target, u)
		if herr != nil {
			_ = part.Close()
			return fail(herr)
		}
		if seen[dest] {
			_ = part.Close()
			return fail(&httpError{http.StatusBadRequest, fmt.Errorf(
				"several parts would be written to %s; send one file part per path, or to upload several files in one request give each part its own filename (and no path query parameter)", dest)})
		}
		seen[dest] = true
		s, herr := stage(u, dest, part, md)
		_ = part.Close()
		if herr != nil {
			return fail(herr)
		}
		files = append(files, s)
	}
	if len(files) == 0 {
		return nil, &httpError{http.StatusBadRequest, errors.New(`multipart body has no "file" part`)}
	}
	return files, nil
}

// isPlainName reports whether name is a single path element that stays in the directory it is
// resolved in.
func isPlainName(name string) bool {
	return name != "" && name != "." && name != ".." && name != "~" && !strings.ContainsRune(name, '/')
}

// partFilename returns a part's filename with its directories. multipart.Part.FileName keeps
// only the base name, but the SDK sends the destination path there. Browsers and undici
// percent-encode the three characters a quoted filename cannot hold; those are decoded.
func partFilename(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return strings.NewReplacer("%22", `"`, "%0A", "\n", "%0D", "\r").Replace(params["filename"])
}
