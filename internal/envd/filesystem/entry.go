package filesystem

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// MetadataPrefix is the xattr namespace of user-defined file metadata: POST /files stores
// X-Metadata-<key> headers as user.e2b.<key>, and EntryInfo.metadata reports them without the
// prefix. The name matches E2B so metadata written by either envd reads back the same.
const MetadataPrefix = "user.e2b."

// names caches uid and gid lookups for one request; ListDir of a large directory would
// otherwise parse /etc/passwd once per entry.
type names struct {
	users  map[uint32]string
	groups map[uint32]string
}

func newNames() *names { return &names{users: map[uint32]string{}, groups: map[uint32]string{}} }

func (n *names) user(uid uint32) string {
	if s, ok := n.users[uid]; ok {
		return s
	}
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		s = u.Username
	}
	n.users[uid] = s
	return s
}

func (n *names) group(gid uint32) string {
	if s, ok := n.groups[gid]; ok {
		return s
	}
	s := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(s); err == nil {
		s = g.Name
	}
	n.groups[gid] = s
	return s
}

// entryInfo describes the entry at path without following a final symlink. It must run with
// the user's credentials (inside identity.Do) so the user's search permissions apply.
//
// Symlinks follow E2B: permissions, owner, group and modified time are the link's own, while
// type and mode come from the fully resolved target and symlink_target holds that target's
// absolute path. Size is the target's too, so a link to a file reports the file's size. A
// link that cannot be resolved (dangling or cyclic) is reported with type SYMLINK and its
// literal target.
func entryInfo(path string, n *names) (*rpc.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return entryFromInfo(path, fi, n), nil
}

// entryFromInfo builds the EntryInfo for path from its Lstat result.
func entryFromInfo(path string, fi fs.FileInfo, n *names) *rpc.EntryInfo {
	mode := fi.Mode()
	e := &rpc.EntryInfo{
		Name:         fi.Name(),
		Type:         fileType(mode),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(mode.Perm()),
		Permissions:  mode.String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = n.user(st.Uid)
		e.Group = n.group(st.Gid)
	}
	if mode&fs.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			if ti, err := os.Stat(target); err == nil {
				e.Type = fileType(ti.Mode())
				e.Mode = uint32(ti.Mode().Perm())
				e.Size = ti.Size()
			}
			e.SymlinkTarget = &target
		} else if raw, err := os.Readlink(path); err == nil {
			e.SymlinkTarget = &raw
		}
	}
	if e.Type != rpc.FileType_FILE_TYPE_SYMLINK {
		e.Metadata = readMetadata(path)
	}
	return e
}

// fileType maps a mode to the protocol's file type; sockets, devices and pipes have none.
func fileType(m fs.FileMode) rpc.FileType {
	switch {
	case m.IsRegular():
		return rpc.FileType_FILE_TYPE_FILE
	case m.IsDir():
		return rpc.FileType_FILE_TYPE_DIRECTORY
	case m&fs.ModeSymlink != 0:
		return rpc.FileType_FILE_TYPE_SYMLINK
	default:
		return rpc.FileType_FILE_TYPE_UNSPECIFIED
	}
}

// readMetadata returns the user.e2b.* xattrs of path (following symlinks), without the
// prefix. Metadata is best effort: a filesystem without xattrs or an unreadable attribute
// leaves it out rather than failing the lookup. Values that are not UTF-8 are skipped because
// a proto string map cannot carry them.
func readMetadata(path string) map[string]string {
	names, err := listXattrs(path)
	if err != nil {
		return nil
	}
	var md map[string]string
	for _, name := range names {
		key, ok := strings.CutPrefix(name, MetadataPrefix)
		if !ok {
			continue
		}
		val, err := getXattr(path, name)
		if err != nil || !utf8.ValidString(key) || !utf8.Valid(val) {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		md[key] = string(val)
	}
	return md
}

// listXattrs returns the xattr names of path, growing the buffer if the list changes between
// the size query and the read.
func listXattrs(path string) ([]string, error) {
	for range 3 {
		size, err := unix.Listxattr(path, nil)
		if err != nil || size == 0 {
			return nil, err
		}
		buf := make([]byte, size)
		size, err = unix.Listxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, n := range strings.Split(string(buf[:size]), "\x00") {
			if n != "" {
				out = append(out, n)
			}
		}
		return out, nil
	}
	return nil, unix.ERANGE
}

func getXattr(path, name string) ([]byte, error) {
	for range 3 {
		size, err := unix.Getxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		size, err = unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:size], nil
	}
	return nil, unix.ERANGE
}
