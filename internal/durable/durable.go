// Package durable writes files and directories so that a crash at any instant (the process
// killed, or the machine losing power) leaves either the old or the new content in place,
// never a torn or empty file: content is fsynced before it is renamed into place, and the
// directory holding the name is fsynced after.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile replaces path with data: written to a temp file in the same directory, fsynced,
// renamed over path, then the directory fsynced.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// Rename renames oldpath to newpath and fsyncs the directories of both names, so the move
// survives a crash.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(newpath)); err != nil {
		return err
	}
	if od := filepath.Dir(oldpath); od != filepath.Dir(newpath) {
		return SyncDir(od)
	}
	return nil
}

// SyncDir fsyncs a directory, making the names created, renamed or removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// SyncTree fsyncs every regular file and directory under root (root included), for a tree
// written by another program (a checkpoint image) before it is renamed into place.
// Symbolic links and other special files are not followed.
func SyncTree(root string) error {
	var errs []error
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() && !d.IsDir() {
			return nil
		}
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("sync %s: %w", path, err))
		}
		f.Close()
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// ReplaceDir puts the directory tree tmp in place of final (which may not exist) durably: the
// tree is fsynced, any old final moved aside, tmp renamed, the rename fsynced, and the old
// one removed. A crash leaves final complete, or absent with final+".old" and tmp complete.
func ReplaceDir(tmp, final string) error {
	if err := SyncTree(tmp); err != nil {
		return err
	}
	old := final + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(final, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := Rename(tmp, final); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
