package template

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// injectEnvd copies the envd binary at src into rootfs at EnvdPath and returns its SHA-256.
// The copy goes to a temp file in the same directory and is renamed over the old binary, so a
// sandbox booting from the template at that moment sees either the old or the new envd, never
// half of one, and sandboxes still running keep their open inode. The rootfs is not trusted
// (an image's, or one a build step changed as root): its links resolve inside it.
func injectEnvd(rootfs, src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("inject envd: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("inject envd: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("inject envd: %s is not a regular file", src)
	}
	r, err := openInRoot(rootfs)
	if err != nil {
		return "", fmt.Errorf("inject envd: %w", err)
	}
	defer r.Close()
	h := sha256.New()
	if err := r.writeFile(EnvdPath, io.TeeReader(in, h), 0o755); err != nil {
		return "", fmt.Errorf("inject envd %s into %s: %w", src, rootfs, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSHA256 hashes the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
