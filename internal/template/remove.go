package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hearthsh/hearth/internal/filelock"
)

// Remove deletes template name from dataDir under its build lock, so it never races a build
// or a fetch of the same name: the directory is renamed aside first, so a crash midway
// leaves no half-deleted template that looks valid (a later remove of the name sweeps what
// is left). It reports whether the template was there.
func Remove(ctx context.Context, dataDir, name string) (bool, error) {
	if err := CheckName(name); err != nil {
		return false, fmt.Errorf("remove template: %w", err)
	}
	root := filepath.Join(dataDir, "templates")
	left, _ := filepath.Glob(filepath.Join(root, "."+name+".old-*"))
	if _, err := os.Stat(Dir(dataDir, name)); errors.Is(err, os.ErrNotExist) && len(left) == 0 {
		return false, nil // not here: no lock file made for it either
	}
	lock, err := filelock.Acquire(ctx, filepath.Join(root, "."+name+".lock"))
	if err != nil {
		return false, fmt.Errorf("remove template %s: %w", name, err)
	}
	// What a crash in an earlier remove of this name left (a version's name is not built
	// again, so no build's sweep would find it).
	for _, p := range left {
		_ = os.RemoveAll(p)
	}
	old := filepath.Join(root, "."+name+".old-"+randHex(4))
	there := true
	if err := os.Rename(Dir(dataDir, name), old); errors.Is(err, os.ErrNotExist) {
		there = false
	} else if err != nil {
		lock.Unlock()
		return false, fmt.Errorf("remove template %s: %w", name, err)
	} else if err := os.RemoveAll(old); err != nil {
		lock.Unlock()
		return true, fmt.Errorf("remove template %s: %w", name, err)
	}
	// Nothing of the name is left, so neither is its lock file. It goes while held: a build
	// waiting on it then locks a new one (filelock.Acquire).
	if err := lock.UnlockAndRemove(); err != nil {
		return there, fmt.Errorf("remove template %s: %w", name, err)
	}
	return there, nil
}

// SweepRemoved finishes removes that a stopped process interrupted: every `.NAME.old-*` left
// in dataDir's templates for which isVersion(NAME) holds is deleted under NAME's lock. Only
// names that are never built again (API build versions) qualify: another name's leftovers
// belong to its next build's sweep.
func SweepRemoved(ctx context.Context, dataDir string, isVersion func(name string) bool) {
	left, _ := filepath.Glob(filepath.Join(dataDir, "templates", ".*.old-*"))
	seen := map[string]bool{}
	for _, p := range left {
		base := filepath.Base(p)
		i := strings.LastIndex(base, ".old-")
		name := base[1:i]
		if seen[name] || CheckName(name) != nil || !isVersion(name) {
			continue
		}
		seen[name] = true
		_, _ = Remove(ctx, dataDir, name)
	}
}

// VersionBuild returns the build ID of an API build's version name (the template ID, '-',
// the build's UUID); ok is false for other names. Such names are never built again.
func VersionBuild(name string) (buildID string, ok bool) {
	if len(name) < 38 || name[len(name)-37] != '-' || !versionUUID.MatchString(name[len(name)-36:]) {
		return "", false
	}
	return name[len(name)-36:], true
}

var versionUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
