package files

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/hearthsh/hearth/internal/envd/filesystem"
)

// metadataHeaderPrefix marks upload headers that become file metadata.
const metadataHeaderPrefix = "X-Metadata-"

// Limits on metadata, as E2B sets them: the kernel caps an xattr name at 255 bytes, which
// leaves 246 for the key after "user.e2b.", and ext4 keeps all of an inode's xattrs in one
// 4 KiB block, so the sum of names and values must fit in 4096 bytes.
const (
	maxMetadataKey   = 255 - len(filesystem.MetadataPrefix)
	maxMetadataTotal = 4096
)

// parseMetadata collects X-Metadata-<key> headers into metadata keyed by the lowercased key
// (HTTP header names are case-insensitive, so the case a client used cannot be kept). When a
// header repeats, its first value counts. Keys and values must be printable ASCII.
func parseMetadata(h http.Header) (map[string]string, error) {
	var md map[string]string
	total := 0
	for name, values := range h {
		if len(name) <= len(metadataHeaderPrefix) || !strings.EqualFold(name[:len(metadataHeaderPrefix)], metadataHeaderPrefix) {
			continue
		}
		key := strings.ToLower(name[len(metadataHeaderPrefix):])
		value := values[0]
		if len(key) > maxMetadataKey {
			return nil, fmt.Errorf("metadata key %q is %d bytes; keys may be at most %d bytes", key, len(key), maxMetadataKey)
		}
		if err := printable("key", key); err != nil {
			return nil, err
		}
		if err := printable(fmt.Sprintf("value of key %q", key), value); err != nil {
			return nil, err
		}
		total += len(filesystem.MetadataPrefix) + len(key) + len(value)
		if md == nil {
			md = map[string]string{}
		}
		md[key] = value
	}
	if total > maxMetadataTotal {
		return nil, fmt.Errorf("metadata totals %d bytes (keys with the %q prefix plus values); at most %d bytes fit on a file",
			total, filesystem.MetadataPrefix, maxMetadataTotal)
	}
	return md, nil
}

func printable(what, s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("metadata %s has byte 0x%02x at offset %d; use printable ASCII only", what, s[i], i)
		}
	}
	return nil
}
