package template

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMachineMirror(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no sources", nil, DefaultMirror},
		{"one-line", map[string]string{"sources.list": "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"}, "http://mirror.example/debian"},
		{"one-line other suite only", map[string]string{"sources.list": "deb http://mirror.example/debian trixie main\n"}, DefaultMirror},
		{"deb822", map[string]string{"sources.list.d/debian.sources": "Types: deb\n# http://snapshot.debian.org/x\nURIs: http://deb822.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"}, "http://deb822.example/debian"},
		{"deb822 disabled stanza skipped", map[string]string{"sources.list.d/a.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\nTypes: deb deb-src\nURIs: http://on.example/debian\nSuites: bookworm\n"}, "http://on.example/debian"},
		{"sources.list wins over .d", map[string]string{"sources.list": "deb http://first.example/debian bookworm main\n", "sources.list.d/b.sources": "Types: deb\nURIs: http://second.example/debian\nSuites: bookworm\n"}, "http://first.example/debian"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, text := range c.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := MachineMirror(dir, "bookworm"); got != c.want {
				t.Errorf("MachineMirror = %q, want %q", got, c.want)
			}
		})
	}
}

// testTemplate builds (or reuses) the base template with envd at envdPath, in a data dir of
// this package's own: injecting test binaries must never touch the template the runtime
// tests boot. That dir is seeded with hard links from HEARTH_TEST_DATA's cached template when
// there is one (injection renames files, so shared inodes stay untouched); otherwise the
// first run takes about a minute of debootstrap.
func testTemplate(t *testing.T, envdPath string) *Template {
	t.Helper()
	skip := t.Skip
	if os.Getenv("HEARTH_REQUIRE_RUNTIME") != "" {
		skip = t.Fatal // make test: a missing prerequisite is a failure, not a skip
	}
	if os.Geteuid() != 0 {
		skip("skipping: building a template needs root")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		skip("skipping: debootstrap not installed (scripts/deps.sh installs it)")
	}
	shared := os.Getenv("HEARTH_TEST_DATA")
	if shared == "" {
		shared = "/var/lib/hearth-test"
	}
	data := filepath.Join(shared, "template-pkg-test")
	current := func(dir string) bool {
		tpl, err := Open(dir, "base")
		return err == nil && tpl.Meta.Recipe == recipes["base"].fingerprint()
	}
	if !current(data) {
		if current(shared) {
			if err := os.RemoveAll(Dir(data, "base")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(data, "templates"), 0o755); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(data, "templates", ".seed")
			_ = os.RemoveAll(tmp)
			if out, err := exec.Command("cp", "-al", Dir(shared, "base"), tmp).CombinedOutput(); err != nil {
				t.Fatalf("seed: %v: %s", err, out)
			}
			if err := os.Rename(tmp, Dir(data, "base")); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tpl, err := Build(ctx, BuildOptions{DataDir: data, Name: "base", EnvdPath: envdPath, Progress: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

// fakeEnvd writes a distinct executable for injection tests; the template only copies it.
func fakeEnvd(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "envd")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n# "+content+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBaseTemplateHasWhatE2BBaseHas(t *testing.T) {
	tpl := testTemplate(t, fakeEnvd(t, "a"))
	root := tpl.RootFS
	for _, bin := range []string{"bin/bash", "usr/bin/python3", "usr/bin/curl", "usr/bin/git", "usr/bin/sudo", "bin/ps", "usr/bin/env",
		"usr/bin/pip", "usr/bin/pip3", "usr/bin/node", "usr/bin/npm", "usr/bin/sudo.distrib"} {
		if fi, err := os.Stat(filepath.Join(root, bin)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s missing or not executable: %v", bin, err)
		}
	}
	if dst, err := os.Readlink(filepath.Join(root, "usr/bin/python")); err != nil || !strings.HasPrefix(dst, "python3") {
		t.Errorf("python should point at python3, got %q (%v)", dst, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil {
		t.Errorf("CA bundle missing: %v", err)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), "user:x:1000:1000::/home/user:/bin/bash\n") {
		t.Errorf("no user 'user' with uid 1000 and home /home/user in /etc/passwd")
	}
	if fi, err := os.Stat(filepath.Join(root, "home/user")); err != nil || fi.Sys() == nil {
		t.Errorf("home missing: %v", err)
	}
	sudo, err := os.ReadFile(filepath.Join(root, "etc/sudoers.d/hearth-user"))
	if err != nil || !strings.Contains(string(sudo), "user ALL=(ALL:ALL) NOPASSWD: ALL") {
		t.Errorf("passwordless sudo for user missing: %q %v", sudo, err)
	}
	// sudo is envd's (a set-user-ID sudo cannot work under gVisor), for the members of group
	// sudo, user among them; Debian's is diverted aside.
	if dst, err := os.Readlink(filepath.Join(root, "usr/bin/sudo")); err != nil || dst != "envd" {
		t.Errorf("/usr/bin/sudo should link to envd, got %q (%v)", dst, err)
	}
	if group, err := os.ReadFile(filepath.Join(root, "etc/group")); err != nil || !strings.Contains(string(group), "\nsudo:x:27:user\n") {
		t.Errorf("user is not in group sudo: %v", err)
	}
	if conf, err := os.ReadFile(filepath.Join(root, "etc/pip.conf")); err != nil || !strings.Contains(string(conf), "break-system-packages = true") {
		t.Errorf("pip.conf does not let pip install outside a venv: %q %v", conf, err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/lib/python3.11/ensurepip")); err != nil {
		t.Errorf("ensurepip (python3-venv), which python3 -m venv needs, missing: %v", err)
	}
	if tpl.Meta.Recipe != recipes["base"].fingerprint() {
		t.Errorf("meta records recipe %q, want %q", tpl.Meta.Recipe, recipes["base"].fingerprint())
	}
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		t.Errorf("rootfs must be a real directory: %v", err)
	}
	if tpl.Meta.SizeBytes <= 0 || tpl.Meta.BuildSeconds <= 0 {
		t.Errorf("build size/time not recorded: %+v", tpl.Meta)
	}
	t.Logf("base template: %d MiB, debootstrap %.0f s", tpl.Meta.SizeBytes>>20, tpl.Meta.BuildSeconds)
}

func TestRebuildOnlyReinjectsEnvd(t *testing.T) {
	first := testTemplate(t, fakeEnvd(t, "first"))
	start := time.Now()
	second := testTemplate(t, fakeEnvd(t, "second"))
	took := time.Since(start)
	if second.Meta.BuildID != first.Meta.BuildID {
		t.Errorf("debootstrap ran again: build id %s -> %s", first.Meta.BuildID, second.Meta.BuildID)
	}
	if took > 10*time.Second {
		t.Errorf("re-injecting envd took %s; it should only copy a file", took)
	}
	got, err := os.ReadFile(filepath.Join(second.RootFS, EnvdPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "second") {
		t.Errorf("template carries a stale envd: %q", got)
	}
	if fi, err := os.Stat(filepath.Join(second.RootFS, EnvdPath)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("envd mode: %v %v", fi.Mode(), err)
	}
	if second.Version() == first.Version() {
		t.Errorf("Version did not change with a new envd: %s", second.Version())
	}
	reopened, err := Open(filepath.Dir(filepath.Dir(second.Dir)), "base")
	if err != nil || reopened.Meta.EnvdSHA256 != second.Meta.EnvdSHA256 {
		t.Errorf("meta.json not updated: %v %+v", err, reopened)
	}
	if matches, _ := filepath.Glob(filepath.Join(second.RootFS, "usr/bin/*.hearth-tmp")); len(matches) > 0 {
		t.Errorf("temp files left: %v", matches)
	}
}

func TestBuildRejectsUnknownTemplateAndMissingEnvd(t *testing.T) {
	ctx := context.Background()
	if _, err := Build(ctx, BuildOptions{DataDir: t.TempDir(), Name: "nope", EnvdPath: "/bin/sh"}); err == nil {
		t.Error("unknown template accepted")
	}
	if _, err := Build(ctx, BuildOptions{DataDir: t.TempDir(), Name: "base", EnvdPath: "/nonexistent/envd"}); err == nil {
		t.Error("missing envd accepted")
	}
}

// TestDerive: a template derived from base carries base's files plus what its commands
// made, keeps base untouched and envd current; a failing command leaves nothing behind and
// an existing template of that name as it was.
func TestDerive(t *testing.T) {
	base := testTemplate(t, fakeEnvd(t, "a"))
	data := filepath.Dir(filepath.Dir(base.Dir))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out strings.Builder
	tpl, err := Derive(ctx, DeriveOptions{DataDir: data, Name: "derived-test", From: "base", Progress: &out, Run: []string{
		"echo made-by-derive > /opt/marker",
		"id -u > /opt/uid && test -r /proc/self/status && test -c /dev/null",
		"useradd --no-create-home extra",
	}})
	if err != nil {
		t.Fatalf("Derive: %v\n%s", err, out.String())
	}
	t.Cleanup(func() { os.RemoveAll(tpl.Dir) })
	for path, want := range map[string]string{"opt/marker": "made-by-derive\n", "opt/uid": "0\n"} {
		if b, err := os.ReadFile(filepath.Join(tpl.RootFS, path)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", path, b, err, want)
		}
	}
	passwd, _ := os.ReadFile(filepath.Join(tpl.RootFS, "etc/passwd"))
	if !strings.Contains(string(passwd), "\nextra:") || !strings.Contains(string(passwd), "\nuser:") {
		t.Errorf("derived /etc/passwd lacks base's user or the new one:\n%s", passwd)
	}
	if _, err := os.Stat(filepath.Join(base.RootFS, "opt/marker")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("base changed by Derive: %v", err)
	}
	if tpl.Meta.From != "base" || len(tpl.Meta.Run) != 3 || tpl.Meta.BuildID == base.Meta.BuildID || tpl.Version() == base.Version() {
		t.Errorf("derived meta = %+v", tpl.Meta)
	}
	// No mount of a build outlives it.
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), tpl.Dir) || strings.Contains(string(mounts), ".derived-test.tmp-") {
		t.Errorf("mounts left behind:\n%s", mounts)
	}
	// Build keeps a derived template's envd current without deriving it again.
	rebuilt, err := Build(ctx, BuildOptions{DataDir: data, Name: "derived-test", EnvdPath: fakeEnvd(t, "b")})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rebuilt.RootFS, EnvdPath)); !strings.Contains(string(b), "# b") || rebuilt.Meta.BuildID != tpl.Meta.BuildID {
		t.Errorf("envd not refreshed in place: %q, build %s -> %s", b, tpl.Meta.BuildID, rebuilt.Meta.BuildID)
	}

	_, err = Derive(ctx, DeriveOptions{DataDir: data, Name: "derived-test", From: "base", Run: []string{"touch /opt/half", "exit 3"}})
	if err == nil || !strings.Contains(err.Error(), "step 2 (exit 3)") {
		t.Fatalf("failing step: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(tpl.RootFS, "opt/marker")); err != nil {
		t.Errorf("a failed derive replaced the existing template: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(data, "templates", ".derived-test.*-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	for _, bad := range []DeriveOptions{
		{Name: "Bad Name", From: "base", Run: []string{"true"}},
		{Name: "base", From: "base", Run: []string{"true"}},
		{Name: "x", From: "nosuch", Run: []string{"true"}},
		{Name: "x", From: "base"},
	} {
		bad.DataDir = data
		if _, err := Derive(ctx, bad); err == nil {
			t.Errorf("Derive(%+v) succeeded", bad)
		}
	}
}

// A change to what a recipe installs or configures changes its fingerprint, which makes Build
// rebuild cached copies (CI's and developers' caches pick up a new base that way).
func TestRecipeFingerprint(t *testing.T) {
	base := recipes["base"]
	fp := base.fingerprint()
	if fp != recipes["base"].fingerprint() {
		t.Fatal("fingerprint is not stable")
	}
	changes := map[string]func(r *recipe){
		"revision":     func(r *recipe) { r.revision++ },
		"packages":     func(r *recipe) { r.packages = append(append([]string(nil), r.packages...), "jq") },
		"apt packages": func(r *recipe) { r.aptPackages = r.aptPackages[1:] },
		"suite":        func(r *recipe) { r.suite = "trixie" },
	}
	for name, change := range changes {
		r := base
		change(&r)
		if r.fingerprint() == fp {
			t.Errorf("changing the %s leaves the fingerprint %s", name, fp)
		}
	}
}

// TestLoginProfileSkipsIDButKeepsPaths: `bash -l` in the base sets root's and a user's PATH
// as Debian's profile does, without running `id` (a fork and exec per command run).
func TestLoginProfileSkipsIDButKeepsPaths(t *testing.T) {
	tpl := testTemplate(t, fakeEnvd(t, "a"))
	b, err := os.ReadFile(filepath.Join(tpl.RootFS, "etc/profile"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `[ "$(id -u)"`) || !strings.Contains(string(b), `${EUID:-$(id -u)}`) {
		t.Fatalf("/etc/profile still runs id for bash:\n%s", b)
	}
	for _, tc := range []struct {
		spec, want, notWant string
	}{
		{"0:0", "/usr/sbin", ""},
		{"1000:1000", "/usr/bin", "sbin"},
	} {
		out, err := exec.Command("chroot", "--userspec="+tc.spec, tpl.RootFS, "/usr/bin/env", "-i", "HOME=/", "/bin/bash", "-l", "-c", `echo "$PATH"`).CombinedOutput()
		if err != nil {
			t.Fatalf("bash -l as %s: %v: %s", tc.spec, err, out)
		}
		if !strings.Contains(string(out), tc.want) || (tc.notWant != "" && strings.Contains(string(out), tc.notWant)) {
			t.Fatalf("PATH as %s = %q, want %q and not %q", tc.spec, out, tc.want, tc.notWant)
		}
	}
}
