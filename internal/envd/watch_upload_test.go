package envd

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
)

// marker is a directory each case makes after its operation: inotify reports events in
// order, so the events before the marker's are exactly the operation's.
const marker = ".marker"

// eventKey renders an event as "type name", e.g. "write a.txt".
func eventKey(ev *rpc.FilesystemEvent) string {
	return strings.ToLower(strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_")) + " " + ev.GetName()
}

// watchFn starts a watch on dir and returns a function that returns the events up to the
// marker's creation.
type watchFn func(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string

func streamedWatch(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := fs.WatchDir(ctx, connect.NewRequest(&rpc.WatchDirRequest{Path: dir, Recursive: recursive}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetStart() == nil {
		t.Fatalf("no start event: %v %v", stream.Msg(), stream.Err())
	}
	events := make(chan string, 256)
	go func() {
		defer close(events)
		for stream.Receive() {
			if ev := stream.Msg().GetFilesystem(); ev != nil {
				events <- eventKey(ev)
			}
		}
	}()
	return func() []string {
		var out []string
		timeout := time.After(10 * time.Second)
		for {
			select {
			case k, ok := <-events:
				if !ok {
					t.Fatalf("stream ended before the marker; saw %q", out)
				}
				if k == "create "+marker {
					return out
				}
				out = append(out, k)
			case <-timeout:
				t.Fatalf("no marker event within 10s; saw %q", out)
			}
		}
	}
}

func polledWatch(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string {
	ctx := context.Background()
	res, err := fs.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir, Recursive: recursive}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetWatcherId()
	t.Cleanup(func() { _, _ = fs.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: id})) })
	return func() []string {
		var out []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			res, err := fs.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range res.Msg.GetEvents() {
				if eventKey(ev) == "create "+marker {
					return out
				}
				out = append(out, eventKey(ev))
			}
		}
		t.Fatalf("no marker event within 10s; saw %q", out)
		return nil
	}
}

// postFiles uploads files (destination path → content) in one request: a single file as
// application/octet-stream, several as multipart parts named by path, as the SDK sends them.
func postFiles(t *testing.T, base string, files [][2]string) int {
	t.Helper()
	var r *http.Request
	var err error
	if len(files) == 1 {
		r, err = http.NewRequest("POST", base+"/files?"+url.Values{"path": {files[0][0]}}.Encode(), strings.NewReader(files[0][1]))
		if err == nil {
			r.Header.Set("Content-Type", "application/octet-stream")
		}
	} else {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for _, f := range files {
			pw, err := mw.CreateFormFile("file", f[0])
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(pw, f[1])
		}
		_ = mw.Close()
		r, err = http.NewRequest("POST", base+"/files", &body)
		if err == nil {
			r.Header.Set("Content-Type", mw.FormDataContentType())
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestWatchedOperations checks the exact events streamed and polled watchers report for each
// file operation, as E2B's envd reports them: an upload is a write in place (create, chmod,
// write; chmod, write when it overwrites) and its staging file is never seen.
func TestWatchedOperations(t *testing.T) {
	_, hs := newTestServer(t)
	fs := filesystemconnect.NewFilesystemClient(http.DefaultClient, hs.URL)
	ctx := context.Background()
	mkfile := func(t *testing.T, p string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	upload := func(status int, files ...[2]string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			abs := make([][2]string, len(files))
			for i, f := range files {
				abs[i] = [2]string{filepath.Join(dir, f[0]), f[1]}
			}
			if got := postFiles(t, hs.URL, abs); got != status {
				t.Fatalf("upload status %d, want %d", got, status)
			}
		}
	}
	tests := []struct {
		name      string
		recursive bool
		setup     []string // files that exist before the watch
		op        func(t *testing.T, dir string)
		want      []string
		subset    bool // want must appear in order, other events may come between (racy recursive adds)
	}{
		{name: "write new file", op: upload(200, [2]string{"a.txt", "hello"}),
			want: []string{"create a.txt", "chmod a.txt", "write a.txt"}},
		{name: "write empty new file", op: upload(200, [2]string{"a.txt", ""}),
			want: []string{"create a.txt", "chmod a.txt", "write a.txt"}},
		{name: "overwrite file", setup: []string{"a.txt"}, op: upload(200, [2]string{"a.txt", "new"}),
			want: []string{"chmod a.txt", "write a.txt"}},
		{name: "write several files", setup: []string{"b.txt"}, op: upload(200, [2]string{"a.txt", "1"}, [2]string{"b.txt", "2"}),
			want: []string{"create a.txt", "chmod a.txt", "write a.txt", "chmod b.txt", "write b.txt"}},
		{name: "failed upload shows nothing", setup: []string{"dir/x"}, op: upload(400, [2]string{"a.txt", "1"}, [2]string{"dir", "2"}),
			want: nil},
		{name: "write in subdirectory, recursive", recursive: true, setup: []string{"sub/old"}, op: upload(200, [2]string{"sub/a.txt", "x"}),
			want: []string{"create sub/a.txt", "chmod sub/a.txt", "write sub/a.txt"}},
		{name: "write in subdirectory, not recursive", setup: []string{"sub/old"}, op: upload(200, [2]string{"sub/a.txt", "x"}),
			want: nil},
		{name: "write into new directories, recursive", recursive: true, op: upload(200, [2]string{"n1/n2/a.txt", "x"}),
			want: []string{"create n1", "create n1/n2", "create n1/n2/a.txt", "write n1/n2/a.txt"}, subset: true},
		{name: "make directory", op: func(t *testing.T, dir string) {
			if _, err := fs.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(dir, "sub")})); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"create sub"}},
		{name: "make nested directories, recursive", recursive: true, op: func(t *testing.T, dir string) {
			if _, err := fs.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(dir, "x/y")})); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"create x", "create x/y"}, subset: true},
		{name: "remove", setup: []string{"a.txt"}, op: func(t *testing.T, dir string) {
			if _, err := fs.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: filepath.Join(dir, "a.txt")})); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"remove a.txt"}},
		{name: "rename", setup: []string{"a.txt"}, op: func(t *testing.T, dir string) {
			if _, err := fs.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: filepath.Join(dir, "a.txt"), Destination: filepath.Join(dir, "b.txt")})); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"rename a.txt", "create b.txt"}},
	}
	for _, kind := range []struct {
		name  string
		watch watchFn
	}{{"streamed", streamedWatch}, {"polled", polledWatch}} {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				for _, f := range tt.setup {
					mkfile(t, filepath.Join(dir, f))
				}
				events := kind.watch(t, fs, dir, tt.recursive)
				tt.op(t, dir)
				if err := os.Mkdir(filepath.Join(dir, marker), 0o755); err != nil {
					t.Fatal(err)
				}
				got := events()
				for _, k := range got {
					if strings.Contains(k, ".upload-") {
						t.Errorf("event names a staging file: %q", k)
					}
				}
				if tt.subset {
					if !inOrder(got, tt.want) {
						t.Errorf("events %q, want %q among them in order", got, tt.want)
					}
				} else if !slices.Equal(got, tt.want) {
					t.Errorf("events %q, want %q", got, tt.want)
				}
			})
		}
	}
}

// inOrder reports whether want is a subsequence of got.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
