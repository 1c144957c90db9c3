package template

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// debianRootProfile is bookworm's /root/.profile.
const debianRootProfile = `# ~/.profile: executed by Bourne-compatible login shells.

if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi

mesg n 2> /dev/null || true
`

func TestQuietRootProfile(t *testing.T) {
	const guarded = `# ~/.profile: executed by Bourne-compatible login shells.

if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi

if [ -t 0 ]; then mesg n 2> /dev/null || true; fi
`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"debian's profile", debianRootProfile, guarded},
		{"already guarded", guarded, guarded},
		{"someone else's profile", "export A=1\n", "export A=1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			p := filepath.Join(rootfs, "root/.profile")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := quietRootProfile(rootfs); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("profile:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	if err := quietRootProfile(t.TempDir()); err == nil {
		t.Error("a rootfs with no /root/.profile: no error")
	}
}

// TestQuietRootProfileRunsMesgOnlyOnATerminal sources the rewritten profile with a mesg that
// records its calls: with stdin not a terminal it must not run (the case of every command the
// SDKs start with pipes), and the profile must still parse and succeed.
func TestQuietRootProfileRunsMesgOnlyOnATerminal(t *testing.T) {
	rootfs := t.TempDir()
	p := filepath.Join(rootfs, "root/.profile")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(debianRootProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := quietRootProfile(rootfs); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "mesg-ran")
	if err := os.WriteFile(filepath.Join(bin, "mesg"), []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", ". "+p)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sourcing the profile: %v: %s", err, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("mesg ran with stdin not a terminal")
	}
}
