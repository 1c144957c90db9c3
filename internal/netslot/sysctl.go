package netslot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// setSysctl writes value to /proc/sys/<key> (dots become slashes). Network
// sysctls apply to the namespace of the calling thread, so callers that
// target a slot run it through inThreadNetns.
func setSysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
