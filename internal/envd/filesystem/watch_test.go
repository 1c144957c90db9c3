package filesystem

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// watchStream opens a WatchDir stream and checks the first message is the start event.
func watchStream(t *testing.T, h *harness, ctx context.Context, r *connect.Request[rpc.WatchDirRequest]) *connect.ServerStreamForClient[rpc.WatchDirResponse] {
	t.Helper()
	stream, err := h.json.WatchDir(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no start event: %v", stream.Err())
	}
	if stream.Msg().GetStart() == nil {
		t.Fatalf("first event = %v, want start", stream.Msg())
	}
	return stream
}

// collect reads filesystem events from the stream into a channel, as "TYPE name".
func collect(stream *connect.ServerStreamForClient[rpc.WatchDirResponse]) (<-chan *rpc.WatchDirResponse, <-chan error) {
	out := make(chan *rpc.WatchDirResponse, 1024)
	done := make(chan error, 1)
	go func() {
		for stream.Receive() {
			out <- stream.Msg()
		}
		done <- stream.Err()
		close(out)
	}()
	return out, done
}

func key(ev *rpc.FilesystemEvent) string { return ev.GetType().String() + " " + ev.GetName() }

// waitFor reads events until every wanted "TYPE name" has been seen.
func waitFor(t *testing.T, events <-chan *rpc.WatchDirResponse, want ...string) map[string]*rpc.FilesystemEvent {
	t.Helper()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	seen := map[string]*rpc.FilesystemEvent{}
	timeout := time.After(10 * time.Second)
	for len(missing) > 0 {
		select {
		case m, ok := <-events:
			if !ok {
				t.Fatalf("stream ended; still missing %v (saw %v)", missing, keys(seen))
			}
			if ev := m.GetFilesystem(); ev != nil {
				seen[key(ev)] = ev
				delete(missing, key(ev))
			}
		case <-timeout:
			t.Fatalf("timed out; missing %v (saw %v)", missing, keys(seen))
		}
	}
	return seen
}

func keys(m map[string]*rpc.FilesystemEvent) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestWatchDirEvents(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := watchStream(t, h, ctx, req(&rpc.WatchDirRequest{Path: dir, IncludeEntry: true}, unprivileged))
	events, _ := collect(stream)

	f := filepath.Join(dir, "new.txt")
	writeFile(t, f, "data", 0o644)
	seen := waitFor(t, events, "EVENT_TYPE_CREATE new.txt", "EVENT_TYPE_WRITE new.txt")
	if e := seen["EVENT_TYPE_WRITE new.txt"].GetEntry(); e.GetPath() != f || e.GetType() != rpc.FileType_FILE_TYPE_FILE {
		t.Errorf("include_entry: entry = %v", e)
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "EVENT_TYPE_CHMOD new.txt")
	if err := os.Rename(f, filepath.Join(dir, "renamed.txt")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "EVENT_TYPE_RENAME new.txt", "EVENT_TYPE_CREATE renamed.txt")
	if err := os.Remove(filepath.Join(dir, "renamed.txt")); err != nil {
		t.Fatal(err)
	}
	seen = waitFor(t, events, "EVENT_TYPE_REMOVE renamed.txt")
	if seen["EVENT_TYPE_REMOVE renamed.txt"].Entry != nil {
		t.Error("a removed entry must not carry entry info")
	}
}

func TestWatchDirRecursive(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "old/existing"), "x", 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, _ := collect(watchStream(t, h, ctx, req(&rpc.WatchDirRequest{Path: dir, Recursive: true}, "")))

	// A directory that existed before the watch.
	writeFile(t, filepath.Join(dir, "old/file"), "x", 0o644)
	waitFor(t, events, "EVENT_TYPE_CREATE old/file")
	// Directories created after the watch started, including ones created in one go.
	if err := os.MkdirAll(filepath.Join(dir, "n1/n2/n3"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "EVENT_TYPE_CREATE n1", "EVENT_TYPE_CREATE n1/n2", "EVENT_TYPE_CREATE n1/n2/n3")
	writeFile(t, filepath.Join(dir, "n1/n2/n3/leaf"), "x", 0o644)
	waitFor(t, events, "EVENT_TYPE_CREATE n1/n2/n3/leaf", "EVENT_TYPE_WRITE n1/n2/n3/leaf")
}

func TestWatchDirNotRecursiveIgnoresSubdirs(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, _ := collect(watchStream(t, h, ctx, req(&rpc.WatchDirRequest{Path: dir}, "")))
	writeFile(t, filepath.Join(dir, "sub/inner"), "x", 0o644)
	writeFile(t, filepath.Join(dir, "marker"), "x", 0o644)
	seen := waitFor(t, events, "EVENT_TYPE_CREATE marker")
	for k := range seen {
		if k == "EVENT_TYPE_CREATE sub/inner" {
			t.Errorf("non-recursive watch reported %s", k)
		}
	}
}

func TestWatchDirKeepaliveAndEnd(t *testing.T) {
	h := newHarness(t)
	dir := filepath.Join(t.TempDir(), "watched")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := req(&rpc.WatchDirRequest{Path: dir}, "")
	r.Header().Set(keepaliveHeader, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events, done := collect(watchStream(t, h, ctx, r))
	select {
	case m := <-events:
		if m.GetKeepalive() == nil {
			t.Fatalf("idle stream sent %v, want keepalive", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no keepalive within 5s at a 1s interval")
	}
	// Removing the watched directory ends the stream without an error.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end after the watched directory was removed")
	}
}

func TestWatchDirErrors(t *testing.T) {
	h := newHarness(t)
	dir := sharedDir(t)
	writeFile(t, filepath.Join(dir, "file"), "x", 0o644)
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		user string
		code connect.Code
	}{
		{"missing", filepath.Join(dir, "nope"), "", connect.CodeNotFound},
		{"not a directory", filepath.Join(dir, "file"), "", connect.CodeInvalidArgument},
		{"no permission", private, unprivileged, connect.CodePermissionDenied},
		{"empty path", "", "", connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := h.client.WatchDir(context.Background(), req(&rpc.WatchDirRequest{Path: tt.path}, tt.user))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			if codeOf(err) != tt.code {
				t.Fatalf("err = %v, want %v", err, tt.code)
			}
			_, err = h.client.CreateWatcher(context.Background(), req(&rpc.CreateWatcherRequest{Path: tt.path}, tt.user))
			if codeOf(err) != tt.code {
				t.Fatalf("CreateWatcher err = %v, want %v", err, tt.code)
			}
		})
	}
}

func TestPolledWatcher(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	created, err := h.json.CreateWatcher(ctx, req(&rpc.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true}, ""))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetWatcherId()
	writeFile(t, filepath.Join(dir, "sub/a"), "x", 0o644)

	want := map[string]bool{"EVENT_TYPE_CREATE sub": true, "EVENT_TYPE_CREATE sub/a": true}
	deadline := time.Now().Add(10 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		res, err := h.json.GetWatcherEvents(ctx, req(&rpc.GetWatcherEventsRequest{WatcherId: id}, ""))
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range res.Msg.GetEvents() {
			delete(want, key(ev))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(want) > 0 {
		t.Fatalf("never polled %v", want)
	}
	time.Sleep(100 * time.Millisecond) // let trailing WRITE/CHMOD events land, then drain
	if _, err := h.json.GetWatcherEvents(ctx, req(&rpc.GetWatcherEventsRequest{WatcherId: id}, "")); err != nil {
		t.Fatal(err)
	}
	res, err := h.json.GetWatcherEvents(ctx, req(&rpc.GetWatcherEventsRequest{WatcherId: id}, ""))
	if err != nil || len(res.Msg.GetEvents()) != 0 {
		t.Fatalf("second poll = %v, %v; want no events, the first poll clears them", res.Msg.GetEvents(), err)
	}

	if _, err := h.json.RemoveWatcher(ctx, req(&rpc.RemoveWatcherRequest{WatcherId: id}, "")); err != nil {
		t.Fatal(err)
	}
	for _, call := range []func() error{
		func() error {
			_, err := h.json.GetWatcherEvents(ctx, req(&rpc.GetWatcherEventsRequest{WatcherId: id}, ""))
			return err
		},
		func() error {
			_, err := h.json.RemoveWatcher(ctx, req(&rpc.RemoveWatcherRequest{WatcherId: id}, ""))
			return err
		},
	} {
		if err := call(); codeOf(err) != connect.CodeNotFound {
			t.Errorf("after RemoveWatcher: err = %v, want NotFound", err)
		}
	}
}

func TestPolledWatcherBufferIsBounded(t *testing.T) {
	var p polledWatcher
	for i := range maxPolledEvents + 10 {
		p.push(&rpc.FilesystemEvent{Name: fmt.Sprint(i)})
	}
	evs, dropped := p.take()
	if len(evs) != maxPolledEvents || dropped != 10 || evs[0].GetName() != "10" {
		t.Fatalf("kept %d events (first %q), dropped %d; want the newest %d", len(evs), evs[0].GetName(), dropped, maxPolledEvents)
	}
	if evs, _ := p.take(); len(evs) != 0 {
		t.Fatalf("take did not clear the buffer: %d left", len(evs))
	}
}

// TestPolledWatchersExpireAndAreBounded: a watcher its client stopped polling is removed when
// the next one is created, one still polled is kept, and a sandbox cannot open watchers
// without limit.
func TestPolledWatchersExpireAndAreBounded(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	create := func() (string, error) {
		res, err := h.json.CreateWatcher(ctx, req(&rpc.CreateWatcherRequest{Path: t.TempDir()}, ""))
		if err != nil {
			return "", err
		}
		return res.Msg.GetWatcherId(), nil
	}
	poll := func(id string) error {
		_, err := h.json.GetWatcherEvents(ctx, req(&rpc.GetWatcherEventsRequest{WatcherId: id}, ""))
		return err
	}
	defer func(d time.Duration) { watcherIdleTimeout = d }(watcherIdleTimeout)
	watcherIdleTimeout = 300 * time.Millisecond

	abandoned, err := create()
	if err != nil {
		t.Fatal(err)
	}
	polled, err := create()
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		time.Sleep(100 * time.Millisecond)
		if err := poll(polled); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := create(); err != nil {
		t.Fatal(err)
	}
	if err := poll(abandoned); codeOf(err) != connect.CodeNotFound {
		t.Errorf("abandoned watcher: poll err = %v, want NotFound", err)
	}
	if err := poll(polled); err != nil {
		t.Errorf("polled watcher was removed: %v", err)
	}

	watcherIdleTimeout = time.Hour
	var last error
	for range maxPolledWatchers + 1 {
		if _, last = create(); last != nil {
			break
		}
	}
	if codeOf(last) != connect.CodeResourceExhausted || !strings.Contains(last.Error(), "the most a sandbox may have") {
		t.Fatalf("creating more than %d watchers: err = %v, want ResourceExhausted from envd's own limit", maxPolledWatchers, last)
	}
}
