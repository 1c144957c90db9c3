package sudo

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hearthsh/hearth/internal/envd/identity"
)

// SecurePath is the PATH commands run with, Debian's sudo secure_path: a user's PATH (and a
// directory they can write to early in it) never decides what root runs.
const SecurePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// keptVars are the caller's variables kept when the environment is reset, sudo's own
// env_keep defaults: terminal and locale settings, nothing that changes what a program does.
var keptVars = map[string]bool{
	"TERM": true, "COLORTERM": true, "COLORS": true, "LS_COLORS": true, "DISPLAY": true,
	"XAUTHORITY": true, "XAUTHORIZATION": true, "LANG": true, "LANGUAGE": true, "LINGUAS": true,
	"TZ": true, "PS1": true, "PS2": true, "HOSTNAME": true,
}

func kept(name string) bool { return keptVars[name] || strings.HasPrefix(name, "LC_") }

// target is an account with its login shell.
type target struct {
	identity.User
	Shell string
}

// lookupTarget resolves -u's value: a name, or #uid.
func lookupTarget(name string) (target, error) {
	if name == "" {
		name = "root"
	}
	var u identity.User
	var err error
	if strings.HasPrefix(name, "#") {
		u, err = lookupUID(strings.TrimPrefix(name, "#"))
	} else {
		u, err = identity.Lookup(name)
	}
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return target{}, fmt.Errorf("unknown user %s", name)
		}
		return target{}, err
	}
	return target{User: u, Shell: loginShell(u.Name)}, nil
}

// lookupUID resolves a numeric uid to its account.
func lookupUID(uid string) (identity.User, error) {
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
		return identity.User{}, fmt.Errorf("%w #%s", identity.ErrUnknownUser, uid)
	}
	u, err := user.LookupId(uid)
	if err != nil {
		var unknown user.UnknownUserIdError
		if errors.As(err, &unknown) {
			return identity.User{}, fmt.Errorf("%w #%s", identity.ErrUnknownUser, uid)
		}
		return identity.User{}, fmt.Errorf("look up uid %s: %w", uid, err)
	}
	return identity.Lookup(u.Username)
}

// passwdFile is the account database loginShell reads; tests point it elsewhere.
var passwdFile = "/etc/passwd"

// loginShell is name's shell from the account database (os/user does not expose it), or
// /bin/sh when it names none.
func loginShell(name string) string {
	f, err := os.Open(passwdFile)
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && fields[0] == name && fields[6] != "" {
			return fields[6]
		}
	}
	return "/bin/sh"
}

// plan is everything needed to start the command.
type plan struct {
	path string   // the program
	argv []string // argv[0] included
	dir  string
	env  []string
}

// buildPlan decides what runs, where and with which environment. sandboxVars are the
// variables /init set for the whole sandbox (its /etc/environment, in effect): a reset
// environment starts from them, as sudo's PAM session starts from /etc/environment.
func buildPlan(req request, caller identity.User, to target, sandboxVars map[string]string) (plan, error) {
	var p plan
	callerEnv := map[string]string{}
	for _, kv := range req.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			callerEnv[k] = v
		}
	}

	env := map[string]string{}
	if req.PreserveEnv && !req.Login {
		for k, v := range callerEnv {
			env[k] = v
		}
	} else {
		for k, v := range sandboxVars {
			env[k] = v
		}
		keep := map[string]bool{}
		for _, k := range req.PreserveList {
			keep[k] = true
		}
		for k, v := range callerEnv {
			if kept(k) || keep[k] {
				env[k] = v
			}
		}
	}
	if _, has := env["HOME"]; !has || !req.PreserveEnv || req.SetHome || req.Login {
		env["HOME"] = to.Home
	}
	env["PATH"] = SecurePath
	env["SHELL"] = to.Shell
	env["USER"], env["LOGNAME"] = to.Name, to.Name
	env["MAIL"] = "/var/mail/" + to.Name
	env["SUDO_USER"] = caller.Name
	env["SUDO_UID"] = strconv.FormatUint(uint64(caller.UID), 10)
	env["SUDO_GID"] = strconv.FormatUint(uint64(caller.GID), 10)
	for _, kv := range req.SetVars {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}

	p.dir = req.Cwd
	if req.Login {
		p.dir = to.Home
	}
	if req.Chdir != "" {
		p.dir = req.Chdir
		if !filepath.IsAbs(p.dir) {
			p.dir = filepath.Join(req.Cwd, p.dir)
		}
	}
	if p.dir == "" || !filepath.IsAbs(p.dir) {
		return plan{}, fmt.Errorf("unable to change directory to %q: the working directory must be absolute", p.dir)
	}
	if fi, err := os.Stat(p.dir); err != nil || !fi.IsDir() {
		if req.Login {
			p.dir = "/" // like login(1), a missing home starts in /
		} else {
			return plan{}, fmt.Errorf("unable to change directory to %s: not a directory or missing", p.dir)
		}
	}

	switch {
	case req.Login || req.Shell:
		shell := to.Shell
		if req.Shell && callerEnv["SHELL"] != "" {
			shell = callerEnv["SHELL"]
		}
		argv0 := shell
		if req.Login {
			argv0 = "-" + filepath.Base(shell)
		}
		p.path, p.argv = shell, []string{argv0}
		if len(req.Args) > 0 {
			p.argv = append(p.argv, "-c", shellJoin(req.Args))
		}
	default:
		path, err := resolve(req.Args[0], p.dir)
		if err != nil {
			return plan{}, err
		}
		p.path, p.argv = path, append([]string{req.Args[0]}, req.Args[1:]...)
	}
	env["SUDO_COMMAND"] = strings.Join(append([]string{p.path}, p.argv[1:]...), " ")

	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	sort.Strings(p.env)
	return p, nil
}

// resolve finds the program to run: a name with a slash as given (relative to dir), else the
// first executable of that name in SecurePath.
func resolve(name, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(SecurePath) {
		p := filepath.Join(d, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: command not found", name)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return errors.New("command not found")
	case fi.IsDir():
		return errors.New("is a directory")
	case fi.Mode()&0o111 == 0:
		return errors.New("permission denied (not executable)")
	}
	return nil
}

// shellJoin renders args for `shell -c` the way sudo does for -s and -i: every character but
// letters, digits, '_', '-' and '$' is escaped with a backslash, so the words arrive as given
// while $VAR is still expanded by the shell.
func shellJoin(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		for _, c := range a {
			alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			if !alnum && c != '_' && c != '-' && c != '$' {
				b.WriteByte('\\')
			}
			b.WriteRune(c)
		}
	}
	return b.String()
}
