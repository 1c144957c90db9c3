package template

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearthsh/hearth/internal/filelock"
)

// Step is one instruction of an API build (E2B's TemplateStep).
type Step struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash,omitempty"`
}

// Phases of an API build that are not a numbered step, as E2B names them in reason.step.
const (
	PhaseBase     = "base"
	PhaseFinalize = "finalize"
)

// StepError is a failed API build: Step is "base", "finalize" or the 1-based step number,
// and the message is what E2B's SDK shows as the build's reason.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// LogFunc receives an API build's log lines: the phase or step they belong to, a level
// (debug, info, warn, error) and the text.
type LogFunc func(step, level, message string)

// APIBuildOptions configure APIBuild.
type APIBuildOptions struct {
	DataDir string
	// Name is the new template's directory name (its ID); From the template on this host it
	// starts from, whose user, workdir and environment it inherits.
	Name, From string
	// Image, when set, is the OCI image the build starts from instead of From (oci.go).
	Image *Image
	// ImageCacheDir keeps pulled layers by digest; ImageMaxBytes and ImageTimeout bound a
	// pull (0: DefaultImageMaxBytes, DefaultImageTimeout).
	ImageCacheDir string
	// ImageCacheMaxBytes is what the layer cache is cut to after a pull; 0 leaves it.
	ImageCacheMaxBytes int64
	ImageMaxBytes      int64
	ImageTimeout       time.Duration
	// EnvdPath is the envd an image base gets; "" takes the one in this host's base template.
	EnvdPath string
	Steps    []Step
	// StartCmd and ReadyCmd are recorded for the sandbox that Finalize boots.
	StartCmd, ReadyCmd string
	// Archive opens the uploaded COPY archive with this files hash.
	Archive func(hash string) (io.ReadCloser, error)
	// StepTimeout bounds each step; 0 means one hour (E2B's layer timeout).
	StepTimeout time.Duration
	Log         LogFunc
	// Finalize runs once the new root filesystem is in place under Name (for the start
	// snapshot); an error from it puts the previous build of Name back.
	Finalize func(ctx context.Context, t *Template) error
}

// defaultPath is appended to a PATH a step sets, as E2B does.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildState is what the steps carry from one to the next.
type buildState struct {
	rootfs  string
	user    string
	workdir string // "" means the user's home
	env     map[string]string
}

// APIBuild builds template o.Name from o.From with E2B Template SDK steps. Every RUN runs
// in a chroot of the new root filesystem as the step's user, with a private mount, PID, UTS
// and IPC namespace, a minimal /dev and a reduced capability bounding set (no
// CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_CHROOT, raw I/O or module loading), sharing the host's
// network for package downloads. The result replaces an older build of o.Name only when
// every step and Finalize succeeded. Errors are *StepError.
func APIBuild(ctx context.Context, o APIBuildOptions) (*Template, error) {
	if err := CheckName(o.Name); err != nil {
		return nil, &StepError{PhaseBase, err}
	}
	if _, ok := recipes[o.Name]; ok || o.Name == o.From {
		return nil, &StepError{PhaseBase, fmt.Errorf("template name %q is taken by a template Hearth builds itself", o.Name)}
	}
	if o.Log == nil {
		o.Log = func(string, string, string) {}
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = time.Hour
	}
	if _, err := exec.LookPath("capsh"); err != nil {
		return nil, &StepError{PhaseBase, fmt.Errorf("the agent host needs capsh to run build steps (apt-get install libcap2-bin): %w", err)}
	}
	var from *Template
	if o.Image == nil {
		t, err := Open(o.DataDir, o.From)
		if err != nil {
			return nil, &StepError{PhaseBase, fmt.Errorf("error getting base template, you may need to rebuild it first: %w", err)}
		}
		from = t
	}
	root := filepath.Join(o.DataDir, "templates")
	unlock, err := lockTemplate(ctx, root, o.Name)
	if err != nil {
		return nil, &StepError{PhaseBase, err}
	}
	defer unlock()
	removeStale(root, o.Name, slog.Default())
	tmp := filepath.Join(root, "."+o.Name+".tmp-"+randHex(4))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, &StepError{PhaseBase, err}
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, rootfsName)
	start := time.Now()

	var st *buildState
	var m Meta
	if o.Image != nil {
		st, m, err = o.imageBase(ctx, rootfs)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (build canceled)", err)
			}
			return nil, &StepError{PhaseBase, err}
		}
	} else {
		o.Log(PhaseBase, "info", fmt.Sprintf("[base] FROM template %s [%s]", o.From, from.Version()))
		if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", from.RootFS, rootfs).CombinedOutput(); err != nil {
			return nil, &StepError{PhaseBase, fmt.Errorf("copy base template %s: %w: %s", o.From, err, out)}
		}
		st = &buildState{rootfs: rootfs, user: from.Meta.User, workdir: from.Meta.Workdir, env: map[string]string{}}
		for k, v := range from.Meta.Env {
			st.env[k] = v
		}
		m = from.Meta
		m.From, m.Run = o.From, nil
	}
	if st.user == "" {
		// E2B's user phase: steps run as `user` unless they say otherwise.
		st.user = UserName
		if err := st.ensureUser(ctx, UserName, true, o.logTo(PhaseBase)); err != nil {
			return nil, &StepError{PhaseBase, err}
		}
	}
	for i, s := range o.Steps {
		step := strconv.Itoa(i + 1)
		o.Log(step, "info", fmt.Sprintf("[builder %d/%d] %s %s", i+1, len(o.Steps), s.Type, strings.Join(s.Args, " ")))
		sctx, cancel := context.WithTimeout(ctx, o.StepTimeout)
		err := st.apply(sctx, step, s, o)
		timedOut := sctx.Err() != nil
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (build canceled)", err)
			} else if timedOut {
				err = fmt.Errorf("%w (step timed out after %v)", err, o.StepTimeout)
			}
			return nil, &StepError{step, err}
		}
	}
	if err := dropAptCaches(rootfs); err != nil {
		return nil, &StepError{PhaseFinalize, err}
	}
	m.User, m.Workdir, m.Env = st.user, st.workdir, st.env
	m.StartCmd, m.ReadyCmd = o.StartCmd, o.ReadyCmd
	if m.SizeBytes, err = diskUsage(rootfs); err != nil {
		return nil, &StepError{PhaseFinalize, err}
	}
	m.Name, m.BuildID, m.BuiltAt, m.BuildSeconds = o.Name, randHex(8), time.Now().UTC(), time.Since(start).Seconds()
	if err := writeMeta(tmp, m); err != nil {
		return nil, &StepError{PhaseFinalize, err}
	}
	t, err := commitBuild(ctx, o.DataDir, o.Name, tmp, o.Finalize)
	if err != nil {
		return nil, &StepError{PhaseFinalize, err}
	}
	return t, nil
}

// commitBuild swaps the finished build in tmp into place and runs finalize on it; if that
// fails, the previous build (if any) is put back and the new one removed.
func commitBuild(ctx context.Context, dataDir, name, tmp string, finalize func(context.Context, *Template) error) (*Template, error) {
	root := filepath.Join(dataDir, "templates")
	dir := Dir(dataDir, name)
	old := filepath.Join(root, "."+name+".old-"+randHex(4))
	hadOld := true
	if err := os.Rename(dir, old); errors.Is(err, os.ErrNotExist) {
		hadOld = false
	} else if err != nil {
		return nil, err
	}
	rollback := func() {
		_ = os.RemoveAll(dir)
		if hadOld {
			_ = os.Rename(old, dir)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		rollback()
		return nil, err
	}
	t, err := Open(dataDir, name)
	if err == nil && finalize != nil {
		err = finalize(ctx, t)
	}
	if err != nil {
		rollback()
		return nil, err
	}
	_ = os.RemoveAll(old)
	return t, nil
}

func (o *APIBuildOptions) logTo(step string) io.Writer {
	return &lineLogger{f: func(line string) { o.Log(step, "info", line) }}
}

// apply runs one step.
func (st *buildState) apply(ctx context.Context, step string, s Step, o APIBuildOptions) error {
	out := o.logTo(step)
	switch s.Type {
	case "RUN":
		if len(s.Args) < 1 || len(s.Args) > 2 {
			return fmt.Errorf("RUN takes a command and an optional user, got %d arguments", len(s.Args))
		}
		user := st.user
		if len(s.Args) == 2 && s.Args[1] != "" {
			user = s.Args[1]
		}
		if _, ok := st.lookupUser(user); !ok {
			return fmt.Errorf("failed to run command '%s': command failed: unauthenticated: invalid username: '%s'", s.Args[0], user)
		}
		if err := st.run(ctx, user, s.Args[0], out); err != nil {
			return fmt.Errorf("failed to run command '%s': %w", s.Args[0], err)
		}
		return nil
	case "ENV":
		if len(s.Args) < 2 || len(s.Args)%2 != 0 {
			return fmt.Errorf("ENV takes pairs of name and value, got %d arguments", len(s.Args))
		}
		for i := 0; i < len(s.Args); i += 2 {
			k := s.Args[i]
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return fmt.Errorf("ENV: invalid variable name %q", k)
			}
			// Values expand $VAR and ${VAR} once against what is set so far (Docker's
			// ENV); there is no command substitution.
			st.env[k] = os.Expand(s.Args[i+1], func(n string) string { return st.env[n] })
		}
		return nil
	case "WORKDIR":
		if len(s.Args) != 1 || s.Args[0] == "" {
			return fmt.Errorf("WORKDIR takes one path")
		}
		wd := s.Args[0]
		if !path.IsAbs(wd) {
			base := st.workdir
			if base == "" {
				base = "/"
			}
			wd = path.Join(base, wd)
		}
		wd = path.Clean(wd)
		script := `d="$HEARTH_DIR"; first=""; while [ ! -e "$d" ]; do first="$d"; d=$(dirname "$d"); done
mkdir -p "$HEARTH_DIR"
if [ -n "$first" ]; then chown -R "$HEARTH_OWNER:$HEARTH_OWNER" "$first"; fi`
		if err := st.runScript(ctx, "root", "/", script, map[string]string{"HEARTH_DIR": wd, "HEARTH_OWNER": st.user}, out); err != nil {
			return fmt.Errorf("make workdir %s: %w", wd, err)
		}
		st.workdir = wd
		return nil
	case "USER":
		if len(s.Args) < 1 || len(s.Args) > 2 || s.Args[0] == "" {
			return fmt.Errorf("USER takes a user name")
		}
		if err := st.ensureUser(ctx, s.Args[0], len(s.Args) == 2 && s.Args[1] == "true", out); err != nil {
			return err
		}
		st.user = s.Args[0]
		return nil
	case "COPY":
		return st.copy(s, o)
	default:
		return fmt.Errorf("unknown step type %q (supported: RUN, COPY, ENV, WORKDIR, USER)", s.Type)
	}
}

func (st *buildState) copy(s Step, o APIBuildOptions) error {
	if s.FilesHash == "" {
		return errors.New("COPY requires files hash to be set")
	}
	if len(s.Args) < 2 {
		return fmt.Errorf("COPY takes a source and a target, got %d arguments", len(s.Args))
	}
	dest := s.Args[1]
	if !path.IsAbs(dest) {
		base := st.workdir
		if base == "" {
			base = st.home(st.user)
		}
		slash := strings.HasSuffix(dest, "/")
		dest = path.Join(base, dest)
		if slash {
			dest += "/"
		}
	}
	owner := st.user
	if len(s.Args) > 2 && s.Args[2] != "" {
		owner = s.Args[2]
	}
	userName, group, _ := strings.Cut(owner, ":")
	u, ok := st.lookupUser(userName)
	if !ok {
		return fmt.Errorf("COPY: unknown owner %q", userName)
	}
	gid := u.gid
	if group != "" {
		g, ok := st.lookupGroup(group)
		if !ok {
			return fmt.Errorf("COPY: unknown group %q", group)
		}
		gid = g
	}
	var mode uint64
	if len(s.Args) > 3 && s.Args[3] != "" {
		var err error
		if mode, err = strconv.ParseUint(s.Args[3], 8, 32); err != nil || mode > 0o7777 {
			return fmt.Errorf("COPY: mode %q is not an octal mode like 0644", s.Args[3])
		}
	}
	if o.Archive == nil {
		return errors.New("COPY: no uploaded files on this build")
	}
	rc, err := o.Archive(s.FilesHash)
	if err != nil {
		return fmt.Errorf("COPY: files %s: %w", s.FilesHash, err)
	}
	defer rc.Close()
	return CopyArchive(rc, st.rootfs, CopyOptions{Src: s.Args[0], Dest: dest, UID: u.uid, GID: gid, Mode: uint32(mode)})
}

// ensureUser creates user name if the rootfs lacks it (as E2B's USER step and user phase
// do), and with sudo grants it passwordless sudo.
func (st *buildState) ensureUser(ctx context.Context, name string, sudo bool, out io.Writer) error {
	if !userRE.MatchString(name) {
		return fmt.Errorf("invalid user name %q", name)
	}
	script := `id -u "$HEARTH_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$HEARTH_USER"`
	if sudo && name != "root" {
		script += `
passwd -d "$HEARTH_USER" >/dev/null 2>&1 || true
if [ -d /etc/sudoers.d ] && [ ! -e "/etc/sudoers.d/hearth-$HEARTH_USER" ] && ! grep -qs "^$HEARTH_USER ALL" /etc/sudoers.d/*; then
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$HEARTH_USER" > "/etc/sudoers.d/hearth-$HEARTH_USER"; chmod 0440 "/etc/sudoers.d/hearth-$HEARTH_USER"
fi`
	}
	if err := st.runScript(ctx, "root", "/", script, map[string]string{"HEARTH_USER": name}, out); err != nil {
		return fmt.Errorf("create user %s: %w", name, err)
	}
	return nil
}

// run runs command with bash -l as user in the current workdir and environment.
func (st *buildState) run(ctx context.Context, user, command string, out io.Writer) error {
	wd := st.workdir
	if wd == "" {
		wd = st.home(user)
	}
	env := map[string]string{}
	for k, v := range st.env {
		env[k] = v
	}
	if p, ok := env["PATH"]; ok {
		env["PATH"] = p + ":" + defaultPath
	}
	return st.runScript(ctx, user, wd, command, env, out)
}

// stepScript runs in the chroot as root with the step's environment: it moves to the
// workdir and becomes the step's user.
const stepScript = `cd "$HEARTH_WD" 2>/dev/null || cd /
u=$HEARTH_U; c=$HEARTH_CMD; unset HEARTH_U HEARTH_CMD HEARTH_WD HEARTH_STEP
if [ "$u" = root ]; then exec /bin/bash -l -c "$c"; fi
exec runuser -u "$u" -- /bin/bash -l -c "$c"`

// confineScript runs on the host in fresh namespaces: it mounts proc and a minimal /dev in
// the rootfs (never through a link the rootfs holds) and enters it with capsh, which drops
// the dangerous capabilities from the bounding set, chroots, and then drops CAP_SYS_CHROOT
// and CAP_SETPCAP too, so nothing in the step can chroot its way out.
const confineScript = `set -e
r=$HEARTH_ROOT; unset HEARTH_ROOT
real() { [ -d "$1" ] && [ ! -L "$1" ]; }
if real "$r/proc"; then mount -t proc proc "$r/proc"; fi
if real "$r/dev"; then
  mount -t tmpfs -o mode=755,nosuid dev "$r/dev"
  for d in null zero full random urandom tty; do touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
  mkdir -p "$r/dev/pts" "$r/dev/shm"; mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"; ln -s pts/ptmx "$r/dev/ptmx"
  mount -t tmpfs -o nosuid,nodev shm "$r/dev/shm"
  ln -s /proc/self/fd "$r/dev/fd"; ln -s /proc/self/fd/0 "$r/dev/stdin"; ln -s /proc/self/fd/1 "$r/dev/stdout"; ln -s /proc/self/fd/2 "$r/dev/stderr"
fi
if [ -f "$r/etc/resolv.conf" ] && [ ! -L "$r/etc/resolv.conf" ]; then mount --bind /etc/resolv.conf "$r/etc/resolv.conf"; fi
cd "$r"
exec capsh --drop=` + droppedCaps + ` --chroot="$r" --drop=cap_sys_chroot,cap_setpcap -- -c "$HEARTH_STEP"`

const droppedCaps = "cap_sys_admin,cap_sys_module,cap_sys_rawio,cap_sys_ptrace,cap_sys_boot,cap_mknod,cap_net_admin,cap_net_raw," +
	"cap_sys_time,cap_mac_admin,cap_mac_override,cap_syslog,cap_dac_read_search,cap_linux_immutable,cap_sys_resource," +
	"cap_sys_tty_config,cap_wake_alarm,cap_block_suspend,cap_audit_control,cap_lease,cap_ipc_lock,cap_sys_pacct,cap_bpf,cap_perfmon"

// runScript runs the shell command script in the rootfs as user in workdir wd with env.
// Cancelling ctx kills its whole process group.
func (st *buildState) runScript(ctx context.Context, user, wd, script string, env map[string]string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "--propagation", "private", "/bin/sh", "-c", confineScript)
	cmd.Env = []string{
		"HEARTH_ROOT=" + st.rootfs, "HEARTH_STEP=" + stepScript, "HEARTH_U=" + user, "HEARTH_WD=" + wd, "HEARTH_CMD=" + script,
		"PATH=" + defaultPath, "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = out, out
	killGroupOnCancel(cmd)
	err := cmd.Run()
	if f, ok := out.(interface{ flush() }); ok {
		f.flush()
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	return err
}

// userRE is what USER accepts: what useradd accepts, and nothing a shell would expand.
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// lockTemplate serialises builds of one template (the lock file Build and Derive take).
func lockTemplate(ctx context.Context, root, name string) (func(), error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(root, "."+name+".lock"))
	if err != nil {
		return nil, fmt.Errorf("lock template %s: %w", name, err)
	}
	return unlock, nil
}

// passwdEntry is one user of the rootfs's /etc/passwd.
type passwdEntry struct {
	uid, gid int
	home     string
}

// lookupUser reads the rootfs's /etc/passwd (through RESOLVE_IN_ROOT: earlier steps may
// have replaced it by a link).
func (st *buildState) lookupUser(name string) (passwdEntry, bool) {
	var found passwdEntry
	ok := false
	st.scanRootFile("etc/passwd", func(f []string) bool {
		if len(f) >= 6 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				found, ok = passwdEntry{uid: uid, gid: gid, home: f[5]}, true
			}
			return false
		}
		return true
	})
	return found, ok
}

func (st *buildState) lookupGroup(name string) (int, bool) {
	gid, ok := 0, false
	st.scanRootFile("etc/group", func(f []string) bool {
		if len(f) >= 3 && f[0] == name {
			if g, err := strconv.Atoi(f[2]); err == nil {
				gid, ok = g, true
			}
			return false
		}
		return true
	})
	if !ok {
		if g, err := strconv.Atoi(name); err == nil {
			return g, true
		}
	}
	return gid, ok
}

func (st *buildState) home(user string) string {
	if u, ok := st.lookupUser(user); ok && path.IsAbs(u.home) {
		return u.home
	}
	return "/"
}

// scanRootFile calls fn with the colon-separated fields of each line of rel in the rootfs
// until fn returns false.
func (st *buildState) scanRootFile(rel string, fn func([]string) bool) {
	rootfd, err := unix.Open(st.rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(rootfd)
	fd, err := unix.Openat2(rootfd, rel, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK, Resolve: inRoot})
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	sc := bufio.NewScanner(io.LimitReader(f, 16<<20))
	for sc.Scan() {
		if !fn(strings.Split(sc.Text(), ":")) {
			return
		}
	}
}

// lineLogger turns written output into one call per line.
type lineLogger struct {
	f   func(string)
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.f(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line without a newline
		l.flush()
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	if len(l.buf) > 0 {
		l.f(string(l.buf))
		l.buf = nil
	}
}
