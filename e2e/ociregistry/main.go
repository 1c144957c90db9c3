// Command ociregistry is a test-only OCI registry for e2e/images.test.mjs: public registries
// are out of reach from the test machines, so the test serves its own on loopback, with an
// image it makes from a root filesystem directory (the seed base template's) plus layers
// with OCI whiteouts. It is go-containerregistry's registry; nothing of it ships in hearth.
//
//	ociregistry -rootfs DIR -user U -password P
//
// pushes REPO:TAG (default test/debian:12) and prints one JSON line,
// {"open":"127.0.0.1:A","auth":"127.0.0.1:B","digest":"sha256:…"}: the same registry served
// anonymously on A and behind basic auth on B. It serves until SIGTERM or SIGINT.
package main

import (
	"archive/tar"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/stream"
)

func main() {
	rootfs := flag.String("rootfs", "", "root filesystem directory the image's first layer holds")
	repo := flag.String("repo", "test/debian:12", "repository and tag to push")
	user := flag.String("user", "e2e", "user of the basic-auth listener")
	password := flag.String("password", "e2e-secret", "password of the basic-auth listener")
	flag.Parse()
	if *rootfs == "" {
		log.Fatal("ociregistry: -rootfs is required")
	}
	blobs, err := os.MkdirTemp("", "hearth-e2e-registry-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(blobs)
	reg := registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)), registry.Logger(log.New(io.Discard, "", 0)))
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	auth, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.Serve(open, reg)) }()
	go func() { log.Fatal(http.Serve(auth, basicAuth(reg, *user, *password))) }()

	digest, err := push(open.Addr().String()+"/"+*repo, *rootfs)
	if err != nil {
		log.Fatalf("ociregistry: %v", err)
	}
	out, _ := json.Marshal(map[string]string{"open": open.Addr().String(), "auth": auth.Addr().String(), "digest": digest})
	fmt.Println(string(out))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// basicAuth refuses every request without the user and password, /v2/ included: that
// challenge is what makes a client send its credentials.
func basicAuth(h http.Handler, user, password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="hearth-e2e"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// push makes the test image and pushes it to ref:
//  1. the root filesystem at rootfs;
//  2. /opt/layer/hello.txt, /opt/opq/lower.txt, and a whiteout of /etc/motd;
//  3. an opaque whiteout of /opt/opq with /opt/opq/upper.txt.
//
// Its config sets IMAGE_VAR and PATH in Env, and a WorkingDir and User that builds ignore.
func push(ref, rootfs string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTree(pw, rootfs)) }()
	layers := []v1.Layer{
		stream.NewLayer(pr),
		stream.NewLayer(entries(
			dir("opt/"), dir("opt/layer/"), file("opt/layer/hello.txt", "hello from layer 2\n"),
			dir("opt/opq/"), file("opt/opq/lower.txt", "hidden by layer 3\n"),
			file("etc/.wh.motd", ""))),
		stream.NewLayer(entries(dir("opt/opq/"), file("opt/opq/.wh..wh..opq", ""), file("opt/opq/upper.txt", "from layer 3\n"))),
	}
	// The config goes in first: stream layers have no digests until pushed.
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from the image config"},
			WorkingDir: "/srv", User: "nobody", Cmd: []string{"/bin/bash"},
		},
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

type tarEntry struct {
	name, body string
	dir        bool
}

func dir(n string) tarEntry        { return tarEntry{name: n, dir: true} }
func file(n, body string) tarEntry { return tarEntry{name: n, body: body} }
func entries(es ...tarEntry) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for _, e := range es {
			h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
			if e.dir {
				h.Mode, h.Typeflag, h.Size = 0o755, tar.TypeDir, 0
			}
			if err := tw.WriteHeader(h); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := io.WriteString(tw, e.body); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// writeTree writes the tree at root as a layer tar: names relative to root, owners and
// modes kept, hard links as links, sockets left out.
func writeTree(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	type ino struct{ dev, ino uint64 }
	seen := map[ino]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			k := ino{st.Dev, st.Ino}
			if first, ok := seen[k]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				seen[k] = h.Name
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
