package filesystem

import (
	"path/filepath"
	"strings"
)

// Uploads are written to a hidden staging file next to their destination and renamed over it,
// so a reader never sees a half-written file. The staging name says whether the destination
// existed, which lets watchers hide the staging file and report what E2B's envd, which writes
// in place, reports: create, chmod, write for a new file; chmod, write for an overwritten one.
const (
	stagingMarker  = ".upload-"
	stagingCreate  = "create-"
	stagingReplace = "replace-"
)

// maxStagedBase is how much of the destination's name a staging name keeps: NAME_MAX is 255
// bytes, and the marker, kind and os.CreateTemp's random digits need the rest.
const maxStagedBase = 200

// StagingPattern is the os.CreateTemp pattern of the staging file for an upload to dest;
// replace says whether dest already exists.
func StagingPattern(dest string, replace bool) string {
	base := filepath.Base(dest)
	if len(base) > maxStagedBase {
		base = base[:maxStagedBase]
	}
	kind := stagingCreate
	if replace {
		kind = stagingReplace
	}
	return "." + base + stagingMarker + kind + "*"
}

// stagingKind reports whether name (a base name) is an upload's staging file and, if so,
// whether its upload replaces an existing file.
func stagingKind(name string) (staging, replace bool) {
	if !strings.HasPrefix(name, ".") {
		return false, false
	}
	i := strings.LastIndex(name, stagingMarker)
	if i < 1 {
		return false, false
	}
	rest := name[i+len(stagingMarker):]
	var digits string
	switch {
	case strings.HasPrefix(rest, stagingCreate):
		digits = rest[len(stagingCreate):]
	case strings.HasPrefix(rest, stagingReplace):
		digits, replace = rest[len(stagingReplace):], true
	default:
		return false, false
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return false, false
	}
	return true, replace
}
