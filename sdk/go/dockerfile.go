package hearth

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// DefaultDockerfileReadyCmd is the ready command of a Dockerfile's CMD or ENTRYPOINT when
// none is given, as E2B's fromDockerfile sets it.
const DefaultDockerfileReadyCmd = "sleep 20"

// FromDockerfile turns a single-stage Dockerfile into a build, as E2B's SDK fromDockerfile
// does: FROM sets FromImage (E2B's base image e2bdev/base is Hearth's base template); the
// steps start with USER root and WORKDIR /; RUN is RUN, COPY and ADD are one COPY per source
// (--chown sets the owner, --chmod the mode; the files come from the build context), ENV and
// ARG (with a default) are ENV, WORKDIR and USER are kept; CMD or ENTRYPOINT becomes the
// start command with the ready command DefaultDockerfileReadyCmd; EXPOSE, VOLUME, LABEL and
// MAINTAINER are metadata and skipped. USER user and WORKDIR /home/user close the steps
// unless the Dockerfile sets a user or workdir. Anything else is an error naming the line.
// The result has no Name, sizes or ContextDir: they are the caller's.
func FromDockerfile(content string) (TemplateBuild, error) {
	res, err := parser.Parse(strings.NewReader(content))
	if err != nil {
		return TemplateBuild{}, fmt.Errorf("Dockerfile: %w", err)
	}
	b := TemplateBuild{Steps: []TemplateStep{{Type: "USER", Args: []string{"root"}}, {Type: "WORKDIR", Args: []string{"/"}}}}
	var (
		from                      bool
		setUser, setWorkdir       bool
		entrypoint, cmd           string
		hasEntrypoint, hasCommand bool
	)
	for _, n := range res.AST.Children {
		instr := strings.ToUpper(n.Value)
		at := func(format string, args ...any) error {
			return fmt.Errorf("Dockerfile line %d: %s: %s", n.StartLine, instr, fmt.Sprintf(format, args...))
		}
		args := nodeArgs(n)
		if len(n.Heredocs) > 0 {
			return TemplateBuild{}, at("heredocs are not supported")
		}
		if !from && instr != "FROM" && instr != "ARG" {
			return TemplateBuild{}, at("comes before FROM")
		}
		switch instr {
		case "FROM":
			if from {
				return TemplateBuild{}, at("multi-stage builds are not supported: one FROM only")
			}
			if err := noFlags(n, at); err != nil {
				return TemplateBuild{}, err
			}
			if len(args) != 1 && !(len(args) == 3 && strings.EqualFold(args[1], "AS")) {
				return TemplateBuild{}, at("want FROM IMAGE [AS NAME]")
			}
			from, b.FromImage = true, args[0]
		case "RUN":
			if err := noFlags(n, at); err != nil {
				return TemplateBuild{}, err
			}
			c := commandOf(n, args)
			if c == "" {
				return TemplateBuild{}, at("no command")
			}
			b.Steps = append(b.Steps, TemplateStep{Type: "RUN", Args: []string{c}})
		case "COPY", "ADD":
			owner, mode, err := copyFlags(n, at)
			if err != nil {
				return TemplateBuild{}, err
			}
			if len(args) < 2 {
				return TemplateBuild{}, at("want %s SRC... DEST", instr)
			}
			dest := args[len(args)-1]
			for _, src := range args[:len(args)-1] {
				if strings.Contains(src, "://") {
					return TemplateBuild{}, at("sources from URLs (%s) are not supported: download them in a RUN step", src)
				}
				b.Steps = append(b.Steps, TemplateStep{Type: "COPY", Args: []string{src, dest, owner, mode}})
			}
		case "ENV":
			// The parser gives each pair as key, value and separator ("=" or "").
			if len(args) < 3 || len(args)%3 != 0 {
				return TemplateBuild{}, at("want ENV KEY=VALUE ...")
			}
			var kv []string
			for i := 0; i < len(args); i += 3 {
				kv = append(kv, args[i], unquote(args[i+1]))
			}
			b.Steps = append(b.Steps, TemplateStep{Type: "ENV", Args: kv})
		case "ARG":
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					continue // no default: nothing to set (build arguments cannot be passed)
				}
				if from {
					b.Steps = append(b.Steps, TemplateStep{Type: "ENV", Args: []string{k, unquote(v)}})
				}
			}
		case "WORKDIR":
			if len(args) != 1 {
				return TemplateBuild{}, at("want WORKDIR PATH")
			}
			setWorkdir = true
			b.Steps = append(b.Steps, TemplateStep{Type: "WORKDIR", Args: []string{args[0]}})
		case "USER":
			if len(args) != 1 {
				return TemplateBuild{}, at("want USER NAME")
			}
			setUser = true
			b.Steps = append(b.Steps, TemplateStep{Type: "USER", Args: []string{args[0]}})
		case "CMD":
			// Words of a shell form that look like flags are the command's own.
			cmd, hasCommand = commandOf(n, append(append([]string{}, n.Flags...), args...)), true
		case "ENTRYPOINT":
			entrypoint, hasEntrypoint = commandOf(n, append(append([]string{}, n.Flags...), args...)), true
		case "EXPOSE", "VOLUME", "LABEL", "MAINTAINER":
		default:
			return TemplateBuild{}, at("not supported (supported: FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT; EXPOSE, VOLUME, LABEL and MAINTAINER are skipped)")
		}
	}
	if !from {
		return TemplateBuild{}, fmt.Errorf("Dockerfile: no FROM")
	}
	if !setUser {
		b.Steps = append(b.Steps, TemplateStep{Type: "USER", Args: []string{"user"}})
	}
	if !setWorkdir {
		b.Steps = append(b.Steps, TemplateStep{Type: "WORKDIR", Args: []string{"/home/user"}})
	}
	if start := strings.TrimSpace(strings.Join(nonEmpty(entrypoint, cmd), " ")); (hasEntrypoint || hasCommand) && start != "" {
		b.StartCmd, b.ReadyCmd = start, DefaultDockerfileReadyCmd
	}
	return b, nil
}

// nodeArgs are an instruction's arguments as the parser split them.
func nodeArgs(n *parser.Node) []string {
	var out []string
	for x := n.Next; x != nil; x = x.Next {
		out = append(out, x.Value)
	}
	return out
}

// commandOf is a RUN, CMD or ENTRYPOINT as one shell command: the shell form as written, the
// exec (JSON) form with each word quoted.
func commandOf(n *parser.Node, args []string) string {
	if !n.Attributes["json"] {
		return strings.TrimSpace(strings.Join(args, " "))
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

var safeWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell; safe words stay bare.
func shellQuote(s string) string {
	if safeWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// unquote drops one pair of matching quotes around a Dockerfile value ("a b" → a b);
// a JSON-quoted value is decoded.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == s[len(s)-1] && (s[0] == '"' || s[0] == '\'') {
		if s[0] == '"' {
			var v string
			if json.Unmarshal([]byte(s), &v) == nil {
				return v
			}
		}
		return s[1 : len(s)-1]
	}
	return s
}

func noFlags(n *parser.Node, at func(string, ...any) error) error {
	if len(n.Flags) > 0 {
		return at("flag %s is not supported", n.Flags[0])
	}
	return nil
}

var modeRE = regexp.MustCompile(`^[0-7]{3,4}$`)

// copyFlags reads COPY's --chown=USER[:GROUP] and --chmod=MODE.
func copyFlags(n *parser.Node, at func(string, ...any) error) (owner, mode string, err error) {
	for _, f := range n.Flags {
		name, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		switch name {
		case "chown":
			owner = v
		case "chmod":
			if !modeRE.MatchString(v) {
				return "", "", at("--chmod=%s: want an octal mode like 0755", v)
			}
			mode = fmt.Sprintf("%04s", v)
		default:
			return "", "", at("flag %s is not supported (supported: --chown, --chmod)", f)
		}
	}
	return owner, mode, nil
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
