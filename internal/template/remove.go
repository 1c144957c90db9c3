package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hearthsh/hearth/internal/filelock"
)

// Remove deletes template name from dataDir under its build lock, so it never races a build
// or a fetch of the same name: the directory is renamed aside first, so a crash midway
// leaves no half-deleted template that looks valid (the next build's sweep removes the
// rest). It reports whether the template was there.
func Remove(ctx context.Context, dataDir, name string) (bool, error) {
	if err := CheckName(name); err != nil {
		return false, fmt.Errorf("remove template: %w", err)
	}
	root := filepath.Join(dataDir, "templates")
	if _, err := os.Stat(Dir(dataDir, name)); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(root, "."+name+".lock"))
	if err != nil {
		return false, fmt.Errorf("remove template %s: %w", name, err)
	}
	defer unlock()
	old := filepath.Join(root, "."+name+".old-"+randHex(4))
	if err := os.Rename(Dir(dataDir, name), old); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("remove template %s: %w", name, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return true, fmt.Errorf("remove template %s: %w", name, err)
	}
	return true, nil
}
