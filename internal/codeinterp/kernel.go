package codeinterp

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// line is one line of the /execute stream (one JSON object). Result lines carry MIME fields
// whose set varies, hence a map.
type line map[string]any

// kernel runs the code of one context. It is used by one execution at a time (the context
// serialises them), but interrupt may be called from another goroutine while execute runs.
type kernel interface {
	// execute runs code and calls emit for each output line (stdout, stderr, result, error,
	// number_of_executions) in order, returning once the kernel is done with the code. It
	// returns an error only when the kernel itself failed (it died, or could not be reached);
	// an exception in the code is an error line, not an error.
	execute(ctx context.Context, code string, emit func(line)) error
	// setEnv sets environment variables in the kernel's process for good (the sandbox's).
	setEnv(ctx context.Context, vars map[string]string) error
	// pushEnv sets variables for one execution, remembering what they replace; popEnv puts
	// that back (unsetting those that were not set).
	pushEnv(ctx context.Context, vars map[string]string) error
	popEnv(ctx context.Context) error
	// interrupt stops the running code, as Ctrl-C would.
	interrupt() error
	// restart replaces the kernel's process with a fresh one: all state is lost, the cwd
	// stays the context's.
	restart(ctx context.Context) error
	// close ends the kernel's process.
	close()
}

// kernelConfig is what every kernel is started with.
type kernelConfig struct {
	cwd string
	// env is the process environment the kernel starts with.
	env []string
	// runDir holds connection files and other state the server owns.
	runDir string
	python string
}

// Languages this server runs. E2B's names normalise first (normalizeLanguage).
const (
	langPython = "python"
	langBash   = "bash"
)

var kernelFactories = map[string]func(ctx context.Context, cfg kernelConfig) (kernel, error){
	langPython: func(ctx context.Context, cfg kernelConfig) (kernel, error) { return startPython(ctx, cfg) },
	langBash:   func(ctx context.Context, cfg kernelConfig) (kernel, error) { return startBash(ctx, cfg) },
}

// ErrUnsupportedLanguage is wrapped by errors about a language no kernel here runs.
var ErrUnsupportedLanguage = errors.New("unsupported language")

// supportedLanguages lists the languages, for error messages.
func supportedLanguages() string {
	var l []string
	for k := range kernelFactories {
		l = append(l, k)
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

// normalizeLanguage applies E2B's rules: trimmed, lower-case, empty means python, js and ts
// are the long names. It fails for languages without a kernel here.
func normalizeLanguage(s string) (string, error) {
	asked := strings.ToLower(strings.TrimSpace(s))
	l := asked
	switch l {
	case "":
		l = langPython
	case "js":
		l = "javascript"
	case "ts":
		l = "typescript"
	}
	if _, ok := kernelFactories[l]; !ok {
		err := fmt.Errorf("%w %q: this code interpreter runs %s", ErrUnsupportedLanguage, asked, supportedLanguages())
		if l == "javascript" || l == "typescript" {
			// E2B's template has them, so SDK users ask: docs/code-interpreter.md says why
			// no kernel for them can be installed here.
			err = fmt.Errorf("%w (it has no JavaScript or TypeScript kernel)", err)
		}
		return "", err
	}
	return l, nil
}

// errorLine is an error the server reports itself (E2B's names, empty traceback).
func errorLine(name, value string) line {
	return line{"type": "error", "name": name, "value": value, "traceback": ""}
}
