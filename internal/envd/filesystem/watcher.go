package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	"github.com/hearthsh/hearth/internal/envd/identity"
	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// watchSpec is what WatchDir and CreateWatcher share.
type watchSpec struct {
	root         string
	recursive    bool
	includeEntry bool
	user         identity.User
}

// dirWatcher turns inotify events under a directory into protocol events. With recursive set
// it watches every subdirectory, including ones created after it started; directories that
// appear with content already in them (mkdir -p, a moved-in tree) get CREATE events for that
// content, which inotify alone would miss.
type dirWatcher struct {
	spec   watchSpec
	fsw    *fsnotify.Watcher
	emit   func(*rpc.FilesystemEvent) bool // false when the consumer is gone
	logger *slog.Logger

	// commits maps a directory to the upload whose staging file was just renamed away in
	// it (true: it replaces a file). rename(2) holds the directory's lock, so the next
	// create in that directory is the upload's destination. Used by the run goroutine only.
	commits map[string]bool

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	err      error // why the watch ended; nil when the watched directory went away
}

// startWatch validates the directory and starts watching it. emit is called from the
// watcher's goroutine, one event at a time.
func startWatch(spec watchSpec, allowNetworkMounts bool, logger *slog.Logger, emit func(*rpc.FilesystemEvent) bool) (*dirWatcher, error) {
	err := asUser(spec.user, func() error {
		fi, err := os.Stat(spec.root)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("%s is not a directory; watch its parent directory instead", spec.root))
		}
		return nil
	})
	if err != nil {
		return nil, fsError("watch", spec.root, err)
	}
	if !allowNetworkMounts {
		if network, err := onNetworkMount(spec.root); err == nil && network {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"%s is on a network filesystem, where change events are unreliable; set allow_network_mounts to watch it anyway", spec.root))
		}
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, watchLimitError(spec.root, fmt.Errorf("create inotify instance: %w", err))
	}
	w := &dirWatcher{spec: spec, fsw: fsw, emit: emit, logger: logger, commits: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := w.add(spec.root, false); err != nil {
		_ = fsw.Close()
		return nil, watchLimitError(spec.root, err)
	}
	go w.run()
	return w, nil
}

// watchLimitError maps inotify's ENOSPC/EMFILE (the per-user watch or instance limit) to
// ResourceExhausted with a hint that names the sysctl, rather than the disk-full hint.
func watchLimitError(root string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"watch %s: inotify limit reached (raise fs.inotify.max_user_watches / max_user_instances or watch fewer directories): %w", root, err))
	}
	return fsError("watch", root, err)
}

// add watches dir and, when recursive, its subdirectories. With announce set, entries found
// below dir are reported as created, and files with content as written too, since they
// appeared before their watch existed (an upload into new directories lands so); they are
// sent after the walk because entry lookups switch credentials themselves.
func (w *dirWatcher) add(dir string, announce bool) error {
	if !w.spec.recursive {
		return asUser(w.spec.user, func() error { return w.fsw.Add(dir) })
	}
	type foundEntry struct {
		path    string
		written bool
	}
	var found []foundEntry
	err := asUser(w.spec.user, func() error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == dir {
					return err
				}
				return nil // unreadable or vanished subdirectory: nothing to watch there
			}
			if announce && p != dir {
				if staging, _ := stagingKind(d.Name()); staging {
					return nil
				}
				fe := foundEntry{path: p}
				if d.Type().IsRegular() {
					if fi, err := d.Info(); err == nil && fi.Size() > 0 {
						fe.written = true
					}
				}
				found = append(found, fe)
			}
			if !d.IsDir() {
				return nil
			}
			if err := w.fsw.Add(p); err != nil {
				if p == dir || errors.Is(err, syscall.ENOSPC) {
					return err
				}
				return filepath.SkipDir
			}
			return nil
		})
	})
	for _, fe := range found {
		if !w.send(w.event(fe.path, rpc.EventType_EVENT_TYPE_CREATE)) {
			break
		}
		if fe.written && !w.send(w.event(fe.path, rpc.EventType_EVENT_TYPE_WRITE)) {
			break
		}
	}
	return err
}

// run forwards events until the watch is stopped, the directory is removed, or inotify fails.
func (w *dirWatcher) run() {
	defer close(w.done)
	defer func() { _ = w.fsw.Close() }()
	for {
		select {
		case <-w.stop:
			return
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.logger.Warn("filesystem watch lost events: inotify queue overflowed", "path", w.spec.root)
				clear(w.commits) // their destinations' events may be among the lost
				continue
			}
			w.err = connect.NewError(connect.CodeInternal, fmt.Errorf("watch %s: %w", w.spec.root, err))
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			if ev.Name == w.spec.root && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return // the watched directory is gone: end the watch cleanly
			}
			if !w.handle(ev) {
				return
			}
		}
	}
}

// handle sends one protocol event per operation in ev (inotify may merge several), in E2B's
// order, and starts watching directories created under a recursive watch. An upload's staging
// file is never reported; its rename over the destination is reported as E2B's in-place
// write: create (for a new file), chmod, write.
func (w *dirWatcher) handle(ev fsnotify.Event) bool {
	dir := filepath.Dir(ev.Name)
	if staging, replace := stagingKind(filepath.Base(ev.Name)); staging {
		if ev.Has(fsnotify.Rename) {
			w.commits[dir] = replace
		}
		return true
	}
	if replace, ok := w.commits[dir]; ok && ev.Has(fsnotify.Create) {
		delete(w.commits, dir)
		types := []rpc.EventType{rpc.EventType_EVENT_TYPE_CHMOD, rpc.EventType_EVENT_TYPE_WRITE}
		if !replace {
			types = append([]rpc.EventType{rpc.EventType_EVENT_TYPE_CREATE}, types...)
		}
		for _, t := range types {
			if !w.send(w.event(ev.Name, t)) {
				return false
			}
		}
		return true
	}
	ops := []struct {
		op fsnotify.Op
		t  rpc.EventType
	}{
		{fsnotify.Create, rpc.EventType_EVENT_TYPE_CREATE},
		{fsnotify.Rename, rpc.EventType_EVENT_TYPE_RENAME},
		{fsnotify.Chmod, rpc.EventType_EVENT_TYPE_CHMOD},
		{fsnotify.Write, rpc.EventType_EVENT_TYPE_WRITE},
		{fsnotify.Remove, rpc.EventType_EVENT_TYPE_REMOVE},
	}
	for _, o := range ops {
		if ev.Has(o.op) && !w.send(w.event(ev.Name, o.t)) {
			return false
		}
	}
	if w.spec.recursive && ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			if err := w.add(ev.Name, true); err != nil && !errors.Is(err, fs.ErrNotExist) {
				w.logger.Warn("filesystem watch cannot follow new directory", "path", ev.Name, "err", err)
			}
		}
	}
	return true
}

// event builds the protocol event for path, with its entry when asked for and it still exists.
func (w *dirWatcher) event(path string, t rpc.EventType) *rpc.FilesystemEvent {
	name, err := filepath.Rel(w.spec.root, path)
	if err != nil {
		name = path
	}
	ev := &rpc.FilesystemEvent{Name: name, Type: t}
	if w.spec.includeEntry {
		_ = asUser(w.spec.user, func() error {
			e, err := entryInfo(path, newNames())
			if err == nil {
				ev.Entry = e
			}
			return nil
		})
	}
	return ev
}

// send hands an event to the consumer unless the watch is stopping.
func (w *dirWatcher) send(ev *rpc.FilesystemEvent) bool {
	select {
	case <-w.stop:
		return false
	default:
	}
	return w.emit(ev)
}

// close stops the watch and waits for its goroutine, so no event is emitted afterwards.
func (w *dirWatcher) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// Filesystem magic numbers (linux/magic.h) of network and FUSE filesystems, where inotify
// sees only local changes.
var networkFS = map[int64]bool{
	0x6969:     true, // NFS
	0xFF534D42: true, // CIFS
	0x517B:     true, // SMB
	0xFE534D42: true, // SMB2
	0x65735546: true, // FUSE
}

func onNetworkMount(path string) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return networkFS[int64(st.Type)], nil
}
