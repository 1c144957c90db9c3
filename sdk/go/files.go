package hearth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// Files reads and writes a sandbox's filesystem: whole files over envd's /files routes, the
// rest over its filesystem service.
type Files struct{ conn *envdConn }

// FileOptions select the user a filesystem operation acts as; a nil *FileOptions means the
// sandbox's default user. Relative paths are resolved against that user's home.
type FileOptions struct {
	User string
}

func (o *FileOptions) user() string {
	if o == nil {
		return ""
	}
	return o.User
}

// EntryType is the type of a filesystem entry.
type EntryType string

// Entry types.
const (
	EntryFile    EntryType = "file"
	EntryDir     EntryType = "dir"
	EntrySymlink EntryType = "symlink"
)

// EntryInfo describes a file, directory or symlink in the sandbox.
type EntryInfo struct {
	Name        string
	Type        EntryType
	Path        string
	Size        int64
	Mode        fs.FileMode
	Permissions string
	Owner       string
	Group       string
	ModTime     time.Time
	// SymlinkTarget is where a symlink points, "" for other entries.
	SymlinkTarget string
}

func entryFromProto(e *fspb.EntryInfo) EntryInfo {
	info := EntryInfo{
		Name: e.GetName(), Path: e.GetPath(), Size: e.GetSize(), Mode: fs.FileMode(e.GetMode()),
		Permissions: e.GetPermissions(), Owner: e.GetOwner(), Group: e.GetGroup(),
		SymlinkTarget: e.GetSymlinkTarget(),
	}
	if e.GetModifiedTime() != nil {
		info.ModTime = e.GetModifiedTime().AsTime()
	}
	switch e.GetType() {
	case fspb.FileType_FILE_TYPE_FILE:
		info.Type = EntryFile
	case fspb.FileType_FILE_TYPE_DIRECTORY:
		info.Type = EntryDir
	case fspb.FileType_FILE_TYPE_SYMLINK:
		info.Type = EntrySymlink
	}
	return info
}

// Read opens a file in the sandbox for reading. The content streams from envd as the caller
// reads; the caller must close the reader. A missing file is an error for which IsNotFound is
// true.
func (f *Files) Read(ctx context.Context, path string, opts *FileOptions) (io.ReadCloser, error) {
	op := "read " + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.conn.filesURL(path), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	setUser(req.Header, opts.user())
	// Plain bytes: sandbox traffic is mostly local, where gzip costs more CPU than it saves,
	// and an identity response carries its Content-Length.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := f.conn.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, errorFromResponse(op, resp)
	}
	return resp.Body, nil
}

// WriteInfo describes a file Write wrote.
type WriteInfo struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// Write writes everything r yields to path in the sandbox, creating parent directories and
// replacing any existing file. The content streams to envd as an application/octet-stream
// upload as it is read from r; envd renames it into place only when the upload is complete,
// so a failed Write leaves the old file, if any, untouched.
func (f *Files) Write(ctx context.Context, path string, r io.Reader, opts *FileOptions) (*WriteInfo, error) {
	op := "write " + path
	if r == nil {
		r = http.NoBody
	}
	// Wrapped so net/http does not special-case r's type; the length, when cheap to know, is
	// set below, else the body goes chunked as it is read.
	body := io.NopCloser(r)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.conn.filesURL(path), body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req.ContentLength = contentLength(r)
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	setUser(req.Header, opts.user())
	resp, err := f.conn.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(op, resp)
	}
	var written []WriteInfo
	if err := json.NewDecoder(resp.Body).Decode(&written); err != nil {
		return nil, fmt.Errorf("%s: decode response: %w", op, err)
	}
	if len(written) == 0 {
		return nil, fmt.Errorf("%s: envd reported no file written", op)
	}
	return &written[0], nil
}

// contentLength returns r's remaining length when it is cheap to know, else -1 (chunked).
func contentLength(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }:
		return int64(v.Len())
	case interface {
		Stat() (fs.FileInfo, error)
		io.Seeker
	}:
		fi, err := v.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return -1
		}
		pos, err := v.Seek(0, io.SeekCurrent)
		if err != nil {
			return -1
		}
		return fi.Size() - pos
	}
	return -1
}

// Stat describes the entry at path.
func (f *Files) Stat(ctx context.Context, path string, opts *FileOptions) (*EntryInfo, error) {
	req := connect.NewRequest(&fspb.StatRequest{Path: path})
	setUser(req.Header(), opts.user())
	resp, err := f.conn.fs.Stat(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	e := entryFromProto(resp.Msg.GetEntry())
	return &e, nil
}

// Exists reports whether path exists.
func (f *Files) Exists(ctx context.Context, path string, opts *FileOptions) (bool, error) {
	_, err := f.Stat(ctx, path, opts)
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// ListDirOptions configure List.
type ListDirOptions struct {
	User string
	// Depth is how many levels to descend (default 1: the directory's own entries).
	Depth int
}

// List returns the entries of the directory at path.
func (f *Files) List(ctx context.Context, path string, opts *ListDirOptions) ([]EntryInfo, error) {
	if opts == nil {
		opts = &ListDirOptions{}
	}
	depth := opts.Depth
	if depth <= 0 {
		depth = 1
	}
	req := connect.NewRequest(&fspb.ListDirRequest{Path: path, Depth: uint32(depth)})
	setUser(req.Header(), opts.User)
	resp, err := f.conn.fs.ListDir(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	out := make([]EntryInfo, 0, len(resp.Msg.GetEntries()))
	for _, e := range resp.Msg.GetEntries() {
		out = append(out, entryFromProto(e))
	}
	return out, nil
}

// MakeDir creates a directory and any missing parents. It reports false, without error, when
// the directory already exists.
func (f *Files) MakeDir(ctx context.Context, path string, opts *FileOptions) (bool, error) {
	req := connect.NewRequest(&fspb.MakeDirRequest{Path: path})
	setUser(req.Header(), opts.user())
	if _, err := f.conn.fs.MakeDir(ctx, req); err != nil {
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			return false, nil
		}
		return false, fmt.Errorf("make directory %s: %w", path, err)
	}
	return true, nil
}

// Remove removes a file, or a directory and everything in it. Removing a path that does not
// exist succeeds, as in E2B.
func (f *Files) Remove(ctx context.Context, path string, opts *FileOptions) error {
	req := connect.NewRequest(&fspb.RemoveRequest{Path: path})
	setUser(req.Header(), opts.user())
	if _, err := f.conn.fs.Remove(ctx, req); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Rename moves or renames an entry.
func (f *Files) Rename(ctx context.Context, from, to string, opts *FileOptions) (*EntryInfo, error) {
	req := connect.NewRequest(&fspb.MoveRequest{Source: from, Destination: to})
	setUser(req.Header(), opts.user())
	resp, err := f.conn.fs.Move(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	e := entryFromProto(resp.Msg.GetEntry())
	return &e, nil
}

// filesURL is envd's /files route for path.
func (c *envdConn) filesURL(path string) string {
	return c.base + "/files?" + url.Values{"path": {path}}.Encode()
}
