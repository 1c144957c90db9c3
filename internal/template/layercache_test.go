package template

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestPruneLayerCache(t *testing.T) {
	const a, b, c = "sha256-" + "aa", "sha256-" + "bb", "sha256-" + "cc"
	type layer struct {
		name string
		size int
		age  time.Duration
	}
	// Oldest use first: a (3 h), b (2 h), c (1 h); 100 bytes each.
	layers := []layer{{a, 100, 3 * time.Hour}, {b, 100, 2 * time.Hour}, {c, 100, time.Hour}}
	tests := []struct {
		name    string
		max     int64
		keep    []string
		extra   []layer // other files in the cache
		want    []string
		removed int
	}{
		{name: "under the limit keeps all", max: 300, want: []string{a, b, c}},
		{name: "least recently used go first", max: 150, want: []string{c}, removed: 2},
		{name: "exactly at the limit", max: 200, want: []string{b, c}, removed: 1},
		{name: "kept layers stay however old", max: 100, keep: []string{"sha256:aa"}, want: []string{a}, removed: 2},
		{name: "zero empties what is not kept", max: 0, keep: []string{"sha256:bb"}, want: []string{b}, removed: 2},
		{name: "a crashed download goes, a running one stays", max: 300,
			extra: []layer{{".pull-old", 50, 7 * time.Hour}, {".pull-new", 50, time.Minute}},
			want:  []string{".pull-new", a, b, c}, removed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, l := range append(slices.Clone(layers), tt.extra...) {
				p := filepath.Join(dir, l.name)
				if err := os.WriteFile(p, make([]byte, l.size), 0o600); err != nil {
					t.Fatal(err)
				}
				at := time.Now().Add(-l.age)
				if err := os.Chtimes(p, at, at); err != nil {
					t.Fatal(err)
				}
			}
			keep := map[string]bool{}
			for _, k := range tt.keep {
				keep[k] = true
			}
			removed, _, err := PruneLayerCache(dir, tt.max, keep)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			es, _ := os.ReadDir(dir)
			for _, e := range es {
				left = append(left, e.Name())
			}
			if !slices.Equal(left, tt.want) || removed != tt.removed {
				t.Errorf("left %q, removed %d; want %q, %d", left, removed, tt.want, tt.removed)
			}
		})
	}
	if n, _, err := PruneLayerCache(filepath.Join(t.TempDir(), "none"), 0, nil); err != nil || n != 0 {
		t.Errorf("a cache never made: %d, %v; want 0, nil", n, err)
	}
}

// A pull cuts the cache to its limit but never drops the image it just pulled, and a cache
// hit counts as a use: the layer a rebuild used outlives an older one.
func TestPullImagePrunesLayerCache(t *testing.T) {
	needRoot(t)
	reg := newTestRegistry(t, "", "")
	cache := t.TempDir()
	var imgs []v1.Image
	var refs []string
	var sizes []int64
	for i := range 3 {
		l := testLayer(t, file("f", rand.Text()+rand.Text()))
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		img := testImage(t, nil, l)
		imgs, sizes = append(imgs, img), append(sizes, n)
		refs = append(refs, reg.push(t, fmt.Sprintf("test/prune:%d", i), img))
	}
	pull := func(i int, max int64) {
		t.Helper()
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		if _, err := PullImage(context.Background(), Image{Ref: refs[i]}, rootfs, PullOptions{CacheDir: cache, CacheMaxBytes: max, Log: func(string) {}}); err != nil {
			t.Fatal(err)
		}
	}
	pull(0, 0)
	pull(1, 0)
	// Image 0's layer was used two hours ago, image 1's one hour ago.
	for i, age := range []time.Duration{2 * time.Hour, time.Hour} {
		ls, _ := imgs[i].Layers()
		d, _ := ls[0].Digest()
		at := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(cache, d.Algorithm+"-"+d.Hex), at, at); err != nil {
			t.Fatal(err)
		}
	}
	pull(0, 0) // a hit: image 0's layer is now the most recently used
	// Room for two layers: pulling image 2 must drop image 1's, the least recently used.
	pull(2, sizes[0]+sizes[2])
	if es, _ := os.ReadDir(cache); len(es) != 2 {
		t.Fatalf("cache holds %d files, want 2", len(es))
	}
	pull(0, sizes[0]+sizes[2])
	pull(1, 1) // a limit below one layer keeps the pulled image's layer only
	for i, want := range []int{1, 2, 1} {
		if n := reg.layerGets(t, imgs[i]); n != want {
			t.Errorf("image %d's layer was fetched %d times, want %d", i, n, want)
		}
	}
	if es, _ := os.ReadDir(cache); len(es) != 1 {
		t.Errorf("cache holds %d files, want image 1's layer only", len(es))
	}
}
