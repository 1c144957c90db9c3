package sudo

import (
	"errors"
	"fmt"
	"strings"
)

// action is what an invocation asks for.
type action int

const (
	actRun     action = iota
	actCheck          // -v: may I?
	actList           // -l: what may I run?
	actHelp           // -h
	actVersion        // -V
	actNothing        // -k or -K alone: there are no cached credentials to drop
)

// invocation is a parsed sudo command line.
type invocation struct {
	act action
	req request
}

// errUsage marks a command-line mistake: the client prints the usage after the message.
var errUsage = errors.New("usage")

// usage is printed by -h and after a command-line mistake.
const usage = `usage: sudo [-EHinsk] [-u user] [-D directory] [--preserve-env=list] [VAR=value] [--] command [arg ...]
       sudo -i | -s [-E] [-u user] [command ...]
       sudo -v | -l | -k | -K | -V | -h

Hearth's sudo asks envd to run the command as root (or -u user). Only root and members of
the group "sudo" may use it; there is never a password to type.`

// unsupported are sudo options this sudo refuses, each with the reason given to the user.
var unsupported = map[string]string{
	"b": "run the command in the background with & instead",
	"g": "run as another group with sg(1) under sudo instead",
	"e": "edit the file with sudo and your editor instead (sudo vi FILE)",
	"C": "descriptors other than stdin, stdout and stderr are not passed to the command",
	"U": "only the calling user's rights can be listed",
	"r": "SELinux roles do not exist in a sandbox",
	"t": "SELinux types do not exist in a sandbox",
	"R": "chroot the command with sudo chroot DIR CMD instead",
	"T": "bound the command with sudo timeout DURATION CMD instead",
}

// takesArg are the short options that take a value.
var takesArg = map[byte]bool{'u': true, 'D': true, 'p': true, 'g': true, 'C': true, 'U': true, 'r': true, 't': true, 'R': true, 'T': true}

// longOpts maps sudo's long options to their short form; "" marks those with no short form.
var longOpts = map[string]string{
	"user": "u", "login": "i", "shell": "s", "preserve-env": "E", "set-home": "H",
	"non-interactive": "n", "help": "h", "version": "V", "validate": "v", "list": "l",
	"reset-timestamp": "k", "remove-timestamp": "K", "chdir": "D", "prompt": "p", "stdin": "S",
	"askpass": "A", "preserve-groups": "P", "background": "b", "group": "g", "edit": "e",
	"close-from": "C", "other-user": "U", "role": "r", "type": "t", "chroot": "R",
	"command-timeout": "T", "bell": "B",
}

// parseArgs parses sudo's command line (without the program name) the way sudo's getopt does:
// options come first, may be clustered (-nE, -uroot), and end at the first word that is not
// one or at "--".
func parseArgs(args []string) (invocation, error) {
	var inv invocation
	reset := false
	i := 0
	set := func(opt, val string) error {
		if why, ok := unsupported[opt]; ok {
			return fmt.Errorf("option -%s is not supported by Hearth's sudo: %s", opt, why)
		}
		switch opt {
		case "u":
			if val == "" {
				return fmt.Errorf("%w: option -u needs a user name", errUsage)
			}
			inv.req.User = val // a name, or #uid
		case "i":
			inv.req.Login = true
		case "s":
			inv.req.Shell = true
		case "E":
			inv.req.PreserveEnv = true
		case "H":
			inv.req.SetHome = true
		case "D":
			if val == "" {
				return fmt.Errorf("%w: option -D needs a directory", errUsage)
			}
			inv.req.Chdir = val
		case "h":
			inv.act = actHelp
		case "V":
			inv.act = actVersion
		case "v":
			inv.act = actCheck
		case "l":
			inv.act = actList
		case "k", "K":
			reset = true
		case "n", "S", "A", "P", "B", "p":
			// No password is ever asked for, so the prompt options change nothing.
		default:
			return fmt.Errorf("%w: invalid option -- '%s'", errUsage, opt)
		}
		return nil
	}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		if strings.HasPrefix(a, "--") {
			name, val, hasVal := strings.Cut(a[2:], "=")
			if name == "preserve-env" && hasVal {
				for _, v := range strings.Split(val, ",") {
					if v != "" {
						inv.req.PreserveList = append(inv.req.PreserveList, v)
					}
				}
				continue
			}
			short, ok := longOpts[name]
			if !ok {
				return inv, fmt.Errorf("%w: unrecognized option '--%s'", errUsage, name)
			}
			if takesArg[short[0]] && !hasVal {
				if i+1 >= len(args) {
					return inv, fmt.Errorf("%w: option '--%s' requires an argument", errUsage, name)
				}
				i++
				val = args[i]
			}
			if err := set(short, val); err != nil {
				return inv, err
			}
			continue
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			if !takesArg[c] {
				if err := set(string(c), ""); err != nil {
					return inv, err
				}
				continue
			}
			val := a[j+1:]
			if val == "" {
				if i+1 >= len(args) {
					return inv, fmt.Errorf("%w: option requires an argument -- '%c'", errUsage, c)
				}
				i++
				val = args[i]
			}
			if err := set(string(c), val); err != nil {
				return inv, err
			}
			break
		}
	}
	rest := args[i:]
	for len(rest) > 0 && isAssignment(rest[0]) {
		inv.req.SetVars = append(inv.req.SetVars, rest[0])
		rest = rest[1:]
	}
	if len(rest) > 0 {
		inv.req.Args = rest
	}
	if inv.act != actRun {
		return inv, nil
	}
	if len(rest) == 0 && !inv.req.Shell && !inv.req.Login {
		if reset {
			inv.act = actNothing
			return inv, nil
		}
		return inv, fmt.Errorf("%w: no command given", errUsage)
	}
	if inv.req.Shell && inv.req.Login {
		return inv, fmt.Errorf("%w: you may not specify both the -i and -s options", errUsage)
	}
	return inv, nil
}

// isAssignment reports whether w is a VAR=value word: a shell variable name, then "=".
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, c := range name {
		alpha := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !alpha && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
