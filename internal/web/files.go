package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"sort"
	"strconv"
	"time"

	"connectrpc.com/connect"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// maxUpload bounds one uploaded file.
const maxUpload = 1 << 30

// Timeouts of file operations: listing and deleting are quick; transfers get longer.
const (
	fileOpTimeout       = 30 * time.Second
	fileTransferTimeout = 30 * time.Minute
)

// fileEntry is one row of the file browser.
type fileEntry struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	Type          string    `json:"type"`
	Size          int64     `json:"size"`
	Permissions   string    `json:"permissions"`
	Owner         string    `json:"owner"`
	ModTime       time.Time `json:"modTime"`
	SymlinkTarget string    `json:"symlinkTarget,omitempty"`
}

// envdOf returns an SDK handle on a running sandbox of key's team, or answers the request.
func (h *Handler) envdOf(w http.ResponseWriter, r *http.Request, key string) (*hearth.Sandbox, bool) {
	id := r.PathValue("id")
	sb, err := h.sandboxOf(r.Context(), r.RemoteAddr, key, id)
	if err != nil {
		jsonError(w, err.status, err.msg)
		return nil, false
	}
	if sb.State != "running" {
		jsonError(w, http.StatusConflict, "sandbox "+id+" is "+sb.State+": resume it to reach its files")
		return nil, false
	}
	return h.envd.sandbox(id, sb.EnvdAccessToken), true
}

// pathParam is the absolute sandbox path a request names.
func pathParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.URL.Query().Get("path")
	if p == "" || p[0] != '/' {
		jsonError(w, http.StatusBadRequest, "path must be an absolute path in the sandbox, e.g. ?path=/home/user")
		return "", false
	}
	return path.Clean(p), true
}

func (h *Handler) listFiles(w http.ResponseWriter, r *http.Request, key string) {
	p, ok := pathParam(w, r)
	if !ok {
		return
	}
	sb, ok := h.envdOf(w, r, key)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileOpTimeout)
	defer cancel()
	entries, err := sb.Files.List(ctx, p, nil)
	if err != nil {
		fileError(w, err)
		return
	}
	out := make([]fileEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, fileEntry{Name: e.Name, Path: e.Path, Type: string(e.Type), Size: e.Size,
			Permissions: e.Permissions, Owner: e.Owner, ModTime: e.ModTime, SymlinkTarget: e.SymlinkTarget})
	}
	// Directories first, then by name: what a file browser shows.
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Type == "dir") != (out[j].Type == "dir") {
			return out[i].Type == "dir"
		}
		return out[i].Name < out[j].Name
	})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"path": p, "entries": out})
}

func (h *Handler) downloadFile(w http.ResponseWriter, r *http.Request, key string) {
	p, ok := pathParam(w, r)
	if !ok {
		return
	}
	sb, ok := h.envdOf(w, r, key)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileTransferTimeout)
	defer cancel()
	body, err := sb.Files.Read(ctx, p, nil)
	if err != nil {
		fileError(w, err)
		return
	}
	defer body.Close()
	// Always an attachment of opaque bytes: a file the sandbox wrote must never render as a
	// page of the dashboard's origin.
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	if _, err := io.Copy(w, body); err != nil {
		h.log.Debug("dashboard: download", "path", p, "err", err)
	}
}

// uploadFile writes the request body to ?path= (the page sends each dropped file as its own
// request, the body being the file's bytes).
func (h *Handler) uploadFile(w http.ResponseWriter, r *http.Request, key string) {
	p, ok := pathParam(w, r)
	if !ok {
		return
	}
	if r.ContentLength > maxUpload {
		jsonError(w, http.StatusRequestEntityTooLarge, "file over "+strconv.Itoa(maxUpload>>20)+" MiB")
		return
	}
	sb, ok := h.envdOf(w, r, key)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileTransferTimeout)
	defer cancel()
	info, err := sb.Files.Write(ctx, p, http.MaxBytesReader(w, r.Body, maxUpload), nil)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			jsonError(w, http.StatusRequestEntityTooLarge, "file over "+strconv.Itoa(maxUpload>>20)+" MiB")
			return
		}
		fileError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(info)
}

func (h *Handler) deleteFile(w http.ResponseWriter, r *http.Request, key string) {
	p, ok := pathParam(w, r)
	if !ok {
		return
	}
	if p == "/" {
		jsonError(w, http.StatusBadRequest, "refusing to delete /")
		return
	}
	sb, ok := h.envdOf(w, r, key)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileOpTimeout)
	defer cancel()
	if err := sb.Files.Remove(ctx, p, nil); err != nil {
		fileError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// fileError answers with the status envd's error maps to.
func fileError(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	var ce *connect.Error
	switch {
	case hearth.IsNotFound(err):
		status = http.StatusNotFound
	case errors.As(err, &ce):
		switch ce.Code() {
		case connect.CodeNotFound:
			status = http.StatusNotFound
		case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
			status = http.StatusBadRequest
		case connect.CodePermissionDenied:
			status = http.StatusForbidden
		case connect.CodeAlreadyExists:
			status = http.StatusConflict
		case connect.CodeDeadlineExceeded:
			status = http.StatusGatewayTimeout
		}
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	jsonError(w, status, fmt.Sprint(err))
}
