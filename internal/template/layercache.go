package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The layer cache (PullOptions.CacheDir) only speeds up rebuilds: a built template holds its
// own flattened copy of every layer. So it can be cut to a size at any time, least recently
// used first, without harming a template; what a later build misses it pulls again. A layer
// removed while a build reads it stays readable to that build; one removed between a build
// finding it and opening it is pulled again (applyImageLayer).

// DefaultImageCacheMaxBytes is the layer cache size an agent keeps when none is set.
const DefaultImageCacheMaxBytes = 10 << 30

// staleTempAge is how old a ".pull-*" download must be before a prune treats it as left by a
// crashed build rather than one still downloading.
const staleTempAge = 6 * time.Hour

// LayerCacheDir is the layer cache under a data directory.
func LayerCacheDir(dataDir string) string { return filepath.Join(dataDir, "oci-layers") }

// PruneLayerCache removes cached layers, least recently used first, until the cache holds at
// most maxBytes; layers named in keep (digests, "sha256:…") stay whatever their age. It also
// removes downloads that a crashed build left behind. It returns what it removed.
func PruneLayerCache(dir string, maxBytes int64, keep map[string]bool) (removed int, freed int64, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("prune layer cache: %w", err)
	}
	type layer struct {
		path string
		size int64
		used time.Time
	}
	var (
		layers []layer
		total  int64
	)
	for _, e := range entries {
		name := e.Name()
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".pull-") {
			if time.Since(fi.ModTime()) > staleTempAge && os.Remove(p) == nil {
				removed, freed = removed+1, freed+fi.Size()
			}
			continue
		}
		algo, hex, ok := strings.Cut(name, "-")
		if !ok || keep[algo+":"+hex] {
			total += fi.Size()
			continue
		}
		layers = append(layers, layer{p, fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	// The modification time is the last use: a cache hit touches it.
	sort.Slice(layers, func(i, j int) bool { return layers[i].used.Before(layers[j].used) })
	for _, l := range layers {
		if total <= maxBytes {
			break
		}
		if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, freed, fmt.Errorf("prune layer cache: %w", err)
		}
		total -= l.size
		removed, freed = removed+1, freed+l.size
	}
	return removed, freed, nil
}

// touchLayer records a cache hit as the layer's last use, for PruneLayerCache's order.
func touchLayer(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}
