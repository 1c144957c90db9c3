package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// These tests pull from go-containerregistry's registry served on loopback, with images
// the tests build: public registries are out of reach, and a test registry can be hostile.

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, link string) entry {
	return entry{name: name, link: link, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, link string) entry {
	return entry{name: name, link: link, typ: tar.TypeLink, mode: 0o644}
}

func testLayer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)), Uid: e.uid, Gid: e.uid}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testImage(t *testing.T, env []string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env, cf.Config.WorkingDir, cf.Config.User = env, "/srv", "nobody"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry serves a registry on loopback; it counts the blob GETs it answers.
type testRegistry struct {
	host string
	mu   sync.Mutex
	gets map[string]int // blob digest → GETs
	user string         // basic-auth user "user", password pass, when set
	pass string
}

func newTestRegistry(t *testing.T, user, pass string) *testRegistry {
	r := &testRegistry{gets: map[string]int{}, user: user, pass: pass}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.mu.Lock()
			r.gets[req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]]++
			r.mu.Unlock()
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *testRegistry) push(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	var auth authn.Authenticator = authn.Anonymous
	if r.user != "" {
		auth = &authn.Basic{Username: r.user, Password: r.pass}
	}
	if err := remote.Write(ref, img, remote.WithAuth(auth)); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

func (r *testRegistry) layerGets(t *testing.T, img v1.Image) int {
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range ls {
		d, _ := l.Digest()
		n += r.gets[d.String()]
	}
	return n
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking an image keeps its owners: needs root")
	}
}

func TestPullImageAppliesLayersAndWhiteouts(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	img := testImage(t, []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello world"},
		testLayer(t,
			dir("etc/"), file("etc/keep", "keep"), file("etc/gone", "gone"),
			dir("etc/opq/"), file("etc/opq/a", "a"), dir("etc/opq/sub/"), file("etc/opq/sub/b", "b"),
			dir("etc/opq/kept/"), file("etc/opq/kept/lower", "lower"),
			dir("usr/"), dir("usr/lib/"), entry{name: "usr/bin/tool", body: "#!/bin/sh\n", typ: tar.TypeReg, mode: 0o4755},
			hardlink("usr/bin/tool2", "usr/bin/tool"), symlink("lib", "usr/lib"),
			entry{name: "home/u/", typ: tar.TypeDir, mode: 0o700, uid: 1234},
			entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
			dir("d/"), file("d/replaced", "a file, then a dir"),
		),
		testLayer(t,
			file("etc/.wh.gone", ""), file("etc/opq/.wh..wh..opq", ""), file("etc/opq/c", "c"), file("etc/opq/kept/upper", "upper"),
			file("added.txt", "from layer 2"), dir("d/replaced/"), file("d/replaced/x", "x"),
		),
	)
	ref := reg.push(t, "test/img:1", img)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	cfg, err := PullImage(context.Background(), Image{Ref: ref}, rootfs, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if cfg.Digest != want.String() || cfg.WorkingDir != "/srv" || cfg.User != "nobody" || len(cfg.Env) != 2 || cfg.Env[1] != "GREETING=hello world" {
		t.Errorf("config = %+v, want digest %s, the image's env, workdir and user", cfg, want)
	}
	for _, c := range []struct {
		path string
		want string // "" means absent
	}{
		{"etc/keep", "keep"}, {"etc/gone", ""}, {"etc/opq/a", ""}, {"etc/opq/sub", ""}, {"etc/opq/c", "c"},
		{"etc/opq/kept/upper", "upper"}, {"etc/opq/kept/lower", ""},
		{"added.txt", "from layer 2"}, {"usr/bin/tool2", "#!/bin/sh\n"}, {"d/replaced/x", "x"}, {"dev/null", ""},
	} {
		b, err := os.ReadFile(filepath.Join(rootfs, c.path))
		if c.want == "" {
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: want it absent, got %q, %v", c.path, b, err)
			}
			continue
		}
		if string(b) != c.want {
			t.Errorf("%s = %q, %v; want %q", c.path, b, err, c.want)
		}
	}
	var a, b syscall.Stat_t
	_ = syscall.Stat(filepath.Join(rootfs, "usr/bin/tool"), &a)
	_ = syscall.Stat(filepath.Join(rootfs, "usr/bin/tool2"), &b)
	if a.Ino != b.Ino || a.Mode&0o7777 != 0o4755 {
		t.Errorf("tool: inode %d mode %o, tool2 inode %d: want one hard-linked file of mode 4755", a.Ino, a.Mode&0o7777, b.Ino)
	}
	if l, err := os.Readlink(filepath.Join(rootfs, "lib")); l != "usr/lib" {
		t.Errorf("lib -> %q, %v; want usr/lib", l, err)
	}
	var h syscall.Stat_t
	if err := syscall.Stat(filepath.Join(rootfs, "home/u"), &h); err != nil || h.Uid != 1234 || h.Mode&0o777 != 0o700 {
		t.Errorf("home/u: uid %d mode %o (%v), want the layer's 1234 and 700", h.Uid, h.Mode&0o777, err)
	}
}

// TestPullImageConfinesHostileLayers: a layer is as hostile as a sandbox. Nothing in one
// may write, link or delete outside the rootfs: names with "..", links (absolute or not)
// followed by later layers, whiteouts and hard links through them.
func TestPullImageConfinesHostileLayers(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	for _, c := range []struct {
		name   string
		layers func(host string) [][]entry
		err    string // "" means the pull succeeds (confined)
	}{
		{"dotdot name", func(string) [][]entry { return [][]entry{{file("../escape", "x")}} }, "not a path inside the image"},
		{"dotdot inside name", func(string) [][]entry { return [][]entry{{file("a/../../escape", "x")}} }, "not a path inside the image"},
		{"absolute symlink then write through it", func(host string) [][]entry {
			return [][]entry{{symlink("evil", host)}, {file("evil/victim", "pwned")}}
		}, ""},
		{"symlink to / then write through it", func(host string) [][]entry {
			return [][]entry{{symlink("evil", "/")}, {file("evil"+host+"/victim", "pwned")}}
		}, ""},
		{"relative symlink climbing out", func(host string) [][]entry {
			return [][]entry{{symlink("evil", "../../../../../../../../"+host)}, {file("evil/victim", "pwned")}}
		}, ""},
		{"symlink and write in one layer", func(host string) [][]entry {
			return [][]entry{{symlink("evil", host), file("evil/victim", "pwned")}}
		}, "a symlink this layer created"},
		{"whiteout through a symlink", func(host string) [][]entry {
			return [][]entry{{symlink("evil", host)}, {file("evil/.wh.victim", "")}}
		}, ""},
		{"whiteout with dotdot", func(string) [][]entry { return [][]entry{{file("../.wh.victim", "")}} }, "not a path inside the image"},
		{"whiteout naming ..", func(string) [][]entry { return [][]entry{{file("a/.wh...", "")}} }, "names no entry"},
		{"opaque whiteout through a symlink", func(host string) [][]entry {
			return [][]entry{{symlink("evil", host)}, {file("evil/.wh..wh..opq", "")}}
		}, ""},
		{"hard link with dotdot", func(string) [][]entry { return [][]entry{{hardlink("h", "../victim")}} }, "hard link to"},
		{"hard link through a symlink", func(host string) [][]entry {
			return [][]entry{{symlink("evil", host)}, {hardlink("h", "evil/victim")}}
		}, "hard link to evil/victim"},
		{"hard link by absolute path", func(host string) [][]entry { return [][]entry{{hardlink("h", host+"/victim")}} }, "hard link to"},
	} {
		t.Run(c.name, func(t *testing.T) {
			host := t.TempDir() // outside the rootfs: must be untouched
			victim := filepath.Join(host, "victim")
			if err := os.WriteFile(victim, []byte("host"), 0o644); err != nil {
				t.Fatal(err)
			}
			var layers []v1.Layer
			for _, es := range c.layers(host) {
				layers = append(layers, testLayer(t, es...))
			}
			ref := reg.push(t, "hostile/"+strings.ReplaceAll(c.name, " ", "-")+":1", testImage(t, nil, layers...))
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			_, err := PullImage(context.Background(), Image{Ref: ref}, rootfs, PullOptions{})
			switch {
			case c.err == "" && err != nil && !errors.Is(err, ErrHostileArchive) && !strings.Contains(err.Error(), "symlink to nothing inside"):
				t.Errorf("pull: %v; want it to succeed, confined, or refuse the entry", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Errorf("pull: %v; want an error containing %q", err, c.err)
			}
			var st syscall.Stat_t
			if b, err := os.ReadFile(victim); string(b) != "host" || syscall.Stat(victim, &st) != nil || st.Nlink != 1 {
				t.Errorf("the host file outside the rootfs is %q (%v, %d links): want it untouched", b, err, st.Nlink)
			}
			if ents, _ := os.ReadDir(host); len(ents) != 1 {
				t.Errorf("the host dir outside the rootfs holds %d entries, want only victim", len(ents))
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(rootfs), "escape")); err == nil {
				t.Error("a file escaped next to the rootfs")
			}
		})
	}
}

func TestPullImageRegistryErrors(t *testing.T) {
	needRoot(t)
	open := newTestRegistry(t, "", "")
	locked := newTestRegistry(t, "alice", "s3cret")
	img := testImage(t, nil, testLayer(t, file("hello", "hi")))
	openRef := open.push(t, "test/img:1", img)
	lockedRef := locked.push(t, "private/img:1", img)
	for _, c := range []struct {
		name string
		img  Image
		err  string // "" means it pulls
	}{
		{"anonymous", Image{Ref: openRef}, ""},
		{"credentials", Image{Ref: lockedRef, Username: "alice", Password: "s3cret"}, ""},
		{"no credentials", Image{Ref: lockedRef}, "refused an anonymous pull"},
		{"wrong password", Image{Ref: lockedRef, Username: "alice", Password: "nope"}, `authentication to registry ` + locked.host + ` as "alice" failed`},
		{"unknown tag", Image{Ref: open.host + "/test/img:2"}, "not found in registry"},
		{"unknown repository", Image{Ref: open.host + "/test/nothing:1"}, "not found in registry"},
		{"bad reference", Image{Ref: "Not A Ref!"}, "is not valid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			_, err := PullImage(context.Background(), c.img, rootfs, PullOptions{})
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(filepath.Join(rootfs, "hello")); string(b) != "hi" {
					t.Errorf("hello = %q", b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || (c.name != "bad reference" && !errors.Is(err, ErrImage)) {
				t.Errorf("err = %v; want ErrImage containing %q", err, c.err)
			}
		})
	}
}

func TestPullImageCachesLayersByDigest(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	img := testImage(t, nil, testLayer(t, file("one", "1")), testLayer(t, file("two", "2")))
	ref := reg.push(t, "test/img:1", img)
	cache := t.TempDir()
	var logs []string
	for i := range 2 {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		if _, err := PullImage(context.Background(), Image{Ref: ref}, rootfs, PullOptions{CacheDir: cache, Log: func(s string) { logs = append(logs, s) }}); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(rootfs, "two")); string(b) != "2" {
			t.Errorf("pull %d: two = %q", i+1, b)
		}
		if n := reg.layerGets(t, img); n != 2 {
			t.Errorf("after pull %d the registry served %d layer blobs, want 2 (the first pull's only)", i+1, n)
		}
	}
	if !strings.Contains(strings.Join(logs, "\n"), "cached") {
		t.Errorf("logs %q do not say the layers came from the cache", logs)
	}
}

func TestPullImagePicksLinuxAMD64(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	arm := testImage(t, nil, testLayer(t, file("arch", "arm64")))
	amd := testImage(t, nil, testLayer(t, file("arch", "amd64")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	ref, _ := name.ParseReference(reg.host + "/multi/img:1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if _, err := PullImage(context.Background(), Image{Ref: ref.String()}, rootfs, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "arch")); string(b) != "amd64" {
		t.Errorf("arch = %q, want the linux/amd64 image's", b)
	}
}

func TestPullImageBounds(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	big := strings.Repeat("x", 1<<20)
	ref := reg.push(t, "test/big:1", testImage(t, nil, testLayer(t, file("big", big)), testLayer(t, dir("a/"), dir("a/b/"), dir("a/b/c/"))))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		o    PullOptions
		err  string
	}{
		{"layers over the cap", context.Background(), PullOptions{MaxBytes: 1000}, "over the limit"},
		{"content over the cap", context.Background(), PullOptions{MaxBytes: 100 << 10}, "unpacks to more than its limit"},
		{"entries over the cap", context.Background(), PullOptions{MaxEntries: 3}, "more entries than its limit"},
		{"canceled", canceled, PullOptions{}, "context canceled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := PullImage(c.ctx, Image{Ref: ref}, filepath.Join(t.TempDir(), "rootfs"), c.o)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("err = %v, want one containing %q", err, c.err)
			}
		})
	}
}

// TestAPIBuildFromImageNeedsBash: an image without bash (distroless, scratch) cannot be a
// base; the build says so at its base step.
func TestAPIBuildFromImageNeedsBash(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	ref := reg.push(t, "distroless/static:1", testImage(t, nil, testLayer(t, dir("etc/"), file("etc/passwd", "root:x:0:0::/root:/sbin/nologin\n"))))
	_, err := APIBuild(context.Background(), APIBuildOptions{DataDir: t.TempDir(), Name: "from-distroless", Image: &Image{Ref: ref}})
	var se *StepError
	if !errors.As(err, &se) || se.Step != PhaseBase || !strings.Contains(err.Error(), "has no /bin/bash") || !strings.Contains(err.Error(), "distroless") {
		t.Fatalf("err = %v, want a base-step error saying the image has no bash", err)
	}
}
