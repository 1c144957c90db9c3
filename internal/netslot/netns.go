package netslot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as with `ip netns add`, so
// `nsenter --net=/run/netns/NAME` and runsc's OCI netns path both work.
const netnsDir = "/run/netns"

// ensureNetnsDir makes /run/netns a shared mount point, as iproute2 does, so
// namespace bind mounts made later propagate into mount namespaces created
// after this (runsc's sandbox among them).
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// inThreadNetns runs fn on a fresh OS thread whose network namespace is ns
// (or a new, unshared one when ns is -1). The goroutine never unlocks its
// thread, so Go destroys the thread when fn returns and no other goroutine
// ever runs in the wrong namespace, whatever fn did.
func inThreadNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: see above.
		if ns == -1 {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("unshare network namespace: %w", err)
				return
			}
		} else if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// createNamedNetns creates an empty network namespace pinned at
// /run/netns/name and returns a handle to it.
func createNamedNetns(ctx context.Context, name string) (netns.NsHandle, error) {
	if err := ctx.Err(); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns file %s: %w", path, err)
	}
	f.Close()
	err = inThreadNetns(-1, func() error {
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount netns to %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return netns.None(), err
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		deleteNamedNetns(name)
		return netns.None(), fmt.Errorf("open netns %s: %w", path, err)
	}
	return h, nil
}

// deleteNamedNetns unpins a namespace; the kernel destroys it (and the
// interfaces inside) once nothing else holds it. Missing is not an error.
func deleteNamedNetns(name string) error {
	path := filepath.Join(netnsDir, name)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file %s: %w", path, err)
	}
	return nil
}

// listNamedNetns returns the names in /run/netns.
func listNamedNetns() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}
