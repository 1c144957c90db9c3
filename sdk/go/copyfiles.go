package hearth

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// MaxCopyArchiveBytes is the largest archive of one COPY step the control plane takes.
const MaxCopyArchiveBytes = 256 << 20

// PackCopy packs the files a COPY step copies from contextDir ("" is the working directory):
// src is a path or glob pattern relative to it, and a directory brings everything below it.
// It returns the step's files hash and a gzipped tar of the matched paths under their paths
// in the context, as E2B's SDK makes them: directories as entries of their own, symlinks as
// symlinks (never followed), modes kept, owners left to the step. The hash covers the step's
// source and target and every path's name, mode, size and content (or link target), so a
// changed file is uploaded again and an unchanged one is not.
func PackCopy(contextDir, src, dest string) (hash string, archive []byte, err error) {
	if contextDir == "" {
		contextDir = "."
	}
	clean := path.Clean(filepath.ToSlash(src))
	if src == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", nil, fmt.Errorf("COPY source %q must be a relative path inside the build context %s", src, contextDir)
	}
	matches, err := filepath.Glob(filepath.Join(contextDir, filepath.FromSlash(clean)))
	if err != nil {
		return "", nil, fmt.Errorf("COPY source %q: %w", src, err)
	}
	if len(matches) == 0 {
		return "", nil, fmt.Errorf("COPY source %q: no such file in the build context %s", src, contextDir)
	}
	seen := map[string]bool{}
	var rels []string
	for _, m := range matches {
		err := filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(contextDir, p)
			if err != nil {
				return err
			}
			if rel = filepath.ToSlash(rel); !seen[rel] {
				seen[rel] = true
				rels = append(rels, rel)
			}
			return nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("COPY source %q: %w", src, err)
		}
	}
	sort.Strings(rels)

	h := sha256.New()
	io.WriteString(h, "COPY "+src+" "+dest)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, rel := range rels {
		if err := packOne(tw, h, contextDir, rel); err != nil {
			return "", nil, fmt.Errorf("COPY source %q: %w", src, err)
		}
		if buf.Len() > MaxCopyArchiveBytes {
			return "", nil, fmt.Errorf("COPY source %q: the archive is over %d MiB: copy fewer files at once", src, MaxCopyArchiveBytes>>20)
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, err
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	if buf.Len() > MaxCopyArchiveBytes {
		return "", nil, fmt.Errorf("COPY source %q: the archive is over %d MiB: copy fewer files at once", src, MaxCopyArchiveBytes>>20)
	}
	return hex.EncodeToString(h.Sum(nil)), buf.Bytes(), nil
}

// packOne adds path rel of the context to the archive and the hash.
func packOne(tw *tar.Writer, h io.Writer, contextDir, rel string) error {
	p := filepath.Join(contextDir, filepath.FromSlash(rel))
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	case fi.IsDir(), fi.Mode().IsRegular():
	default:
		return fmt.Errorf("%s is not a file, directory or symlink (devices, sockets and pipes cannot be copied)", rel)
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = rel
	if fi.IsDir() {
		hdr.Name += "/"
	}
	// Owners are the step's to set; the builder's user names mean nothing in the sandbox.
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	io.WriteString(h, "\x00"+rel+"\x00"+strconv.FormatUint(uint64(fi.Mode()), 10)+"\x00"+strconv.FormatInt(hdr.Size, 10)+"\x00")
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	switch {
	case link != "":
		io.WriteString(h, link)
	case fi.Mode().IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(io.MultiWriter(tw, h), f)
		if err != nil {
			return err
		}
		if n != hdr.Size {
			return errors.New(rel + " changed while it was being packed")
		}
	}
	return nil
}
