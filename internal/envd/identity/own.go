package identity

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Ownership is also set explicitly on everything envd creates for a user, on top of Do's
// effective uid, so an upload belongs to the user's primary group as in E2B, even in a
// set-group-ID directory.

// Own gives f to u when envd runs as root and u is someone else; otherwise it does nothing.
func Own(u User, f *os.File) error {
	if !IsRoot() || u.UID == 0 {
		return nil
	}
	return f.Chown(int(u.UID), int(u.GID))
}

// MkdirAll is os.MkdirAll that leaves every directory it creates owned by u.
func MkdirAll(u User, path string, perm os.FileMode) error {
	// Find the deepest existing ancestor; everything below it is new.
	var missing []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	if !IsRoot() || u.UID == 0 {
		return nil
	}
	for _, p := range missing {
		if err := os.Lchown(p, int(u.UID), int(u.GID)); err != nil {
			return err
		}
	}
	return nil
}
