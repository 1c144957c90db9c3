package filesystem

import (
	"strings"
	"testing"
)

func TestStagingKind(t *testing.T) {
	tests := []struct {
		name             string
		staging, replace bool
	}{
		{".a.txt.upload-create-123", true, false},
		{".a.txt.upload-replace-4294967295", true, true},
		{"..upload-create-1", true, false},
		{".x.upload-create-1.upload-replace-2", true, true},
		{"a.txt.upload-create-1", false, false}, // not hidden
		{".a.txt.upload-create-", false, false}, // no digits
		{".a.txt.upload-create-1x", false, false},
		{".a.txt.upload-123", false, false}, // no kind
		{".upload-create-1", false, false},  // no destination name
		{".a.txt", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		staging, replace := stagingKind(tt.name)
		if staging != tt.staging || replace != tt.replace {
			t.Errorf("stagingKind(%q) = %v, %v; want %v, %v", tt.name, staging, replace, tt.staging, tt.replace)
		}
	}
}

// TestStagingPatternRoundTrip: every staging name an upload makes, even for a destination
// whose name is as long as a name may be, is recognised as one and fits NAME_MAX.
func TestStagingPatternRoundTrip(t *testing.T) {
	for _, dest := range []string{"/d/a.txt", "/d/.hidden", "/d/x.upload-create-1", "/d/" + strings.Repeat("n", 255)} {
		for _, replace := range []bool{false, true} {
			name := strings.Replace(StagingPattern(dest, replace), "*", "4294967295", 1)
			if len(name) > 255 {
				t.Errorf("staging name for %q is %d bytes, over NAME_MAX", dest, len(name))
			}
			if staging, r := stagingKind(name); !staging || r != replace {
				t.Errorf("stagingKind(%q) = %v, %v; want true, %v", name, staging, r, replace)
			}
		}
	}
}

func FuzzStagingKind(f *testing.F) {
	f.Add(".a.txt.upload-create-1")
	f.Add(".a.upload-replace-99")
	f.Add("plain")
	f.Fuzz(func(t *testing.T, name string) {
		staging, replace := stagingKind(name)
		if !staging && replace {
			t.Fatalf("stagingKind(%q): replace without staging", name)
		}
		if staging && (!strings.HasPrefix(name, ".") || !strings.Contains(name, stagingMarker)) {
			t.Fatalf("stagingKind(%q) accepted a name without the staging form", name)
		}
	})
}
