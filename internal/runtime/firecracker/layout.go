package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Names inside a VM's root directory, the world Firecracker sees (its chroot when jailed).
const (
	kernelFile  = "vmlinux"
	initrdFile  = "initrd"
	rootfsFile  = "rootfs.ext4"
	apiSock     = "api.sock"
	uffdSock    = "uffd.sock"
	snapDir     = "snapshot"     // a loaded snapshot (in the root) or the sandbox's snapshot
	snapTmpDir  = "snapshot.tmp" // where Pause has Firecracker write
	stateFile   = "vm.state"
	memFile     = "mem"
	logFile     = "firecracker.log" // Firecracker's stdout/stderr, in the sandbox dir
	maxIDLen    = 64                // jailer --id limit
	maxSockPath = 107               // sun_path minus the NUL
)

// layout places one VM's files. Firecracker under the jailer sees its root as "/"; run
// directly it sees host paths, so guest() is the only place that difference lives.
type layout struct {
	vmID   string
	jail   string // <RunDir>/<exec name>/<vmID>: removed whole when the VM stops
	root   string // jail/root
	jailed bool
}

// newLayout computes where the VM of sandbox id lives. The jailer builds its chroot at
// <chroot-base>/<basename of exec-file>/<id>/root, so the direct mode uses the same path.
func (d *Driver) newLayout(id string) (layout, error) {
	vmID := vmID(d.cfg.IDPrefix, id)
	jail := filepath.Join(d.cfg.RunDir, filepath.Base(d.cfg.Firecracker), vmID)
	l := layout{vmID: vmID, jail: jail, root: filepath.Join(jail, "root"), jailed: d.cfg.Jailer != ""}
	for _, s := range []string{apiSock, uffdSock} {
		if p := l.host(s); len(p) > maxSockPath {
			return layout{}, fmt.Errorf("socket path %s is %d bytes, longer than a Unix socket allows (%d): use a shorter RunDir", p, len(p), maxSockPath)
		}
	}
	return l, nil
}

// vmID is the Firecracker/jailer --id of a sandbox's VM: the prefix, then the sandbox ID
// with anything but letters, digits and '-' replaced, at most 64 characters.
func vmID(prefix, sandbox string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('-')
	for _, r := range sandbox {
		if r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > maxIDLen {
		s = s[:maxIDLen]
	}
	return s
}

// host is the host path of name inside the root.
func (l layout) host(name string) string { return filepath.Join(l.root, name) }

// guest is the path Firecracker must be given for name.
func (l layout) guest(name string) string {
	if l.jailed {
		return "/" + name
	}
	return l.host(name)
}

// create makes a fresh, empty root, removing what an earlier run left.
func (l layout) create() error {
	if err := os.RemoveAll(l.jail); err != nil {
		return err
	}
	return os.MkdirAll(l.root, 0o711)
}

// link puts src into the root as name: a hard link, so the VM writes the sandbox's own
// file and a jailed Firecracker can reach it without a bind mount.
func (l layout) link(src, name string) error {
	dst := l.host(name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return err
	}
	if err := os.Link(src, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("link %s into the VM root (RunDir must be on the same filesystem as the sandbox and image dirs): %w", src, err)
	}
	return nil
}
