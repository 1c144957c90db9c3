package template

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// dpkgSlim keeps documentation, manual pages and message translations out of the rootfs for
// every package dpkg installs from now on, inside sandboxes too (as Debian's slim container
// images do): they are a sixth of the base template and no sandbox reads them. Copyright
// files stay.
//
// It also leaves out setuptools' distutils-precedence.pth, which makes every start of python3
// import setuptools' distutils hook (about 40 ms natively, several times that in an emulated
// VM) only to serve code that imports distutils before setuptools; setuptools installs its
// hook itself when it is imported, so pip and builds work the same.
const dpkgSlim = `# Hearth: no documentation, manual pages or translations in sandboxes.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/lib/python3/dist-packages/distutils-precedence.pth
`

// slim writes dpkgSlim into rootfs and removes what it excludes from the packages already
// installed (debootstrap's).
func slim(rootfs string) error {
	if err := os.WriteFile(filepath.Join(rootfs, "etc/dpkg/dpkg.cfg.d/hearth-slim"), []byte(dpkgSlim), 0o644); err != nil {
		return fmt.Errorf("slim: %w", err)
	}
	keep := func(rel string) bool {
		return (strings.HasPrefix(rel, "usr/share/doc/") && filepath.Base(rel) == "copyright") ||
			rel == "usr/share/locale/locale.alias"
	}
	for _, dir := range []string{"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"} {
		root := filepath.Join(rootfs, dir)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(rootfs, p)
			if keep(rel) {
				return nil
			}
			return os.Remove(p)
		})
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("slim %s: %w", dir, err)
		}
	}
	return nil
}
