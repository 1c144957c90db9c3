package template

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultMirror is used when the machine's apt sources name no mirror for the suite.
const DefaultMirror = "http://deb.debian.org/debian"

// aptSourcesFiles lists the files apt reads its sources from, in apt's order.
func aptSourcesFiles(etcApt string) []string {
	files := []string{filepath.Join(etcApt, "sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", pat))
		slices.Sort(m)
		files = append(files, m...)
	}
	return files
}

// MachineMirror returns the first `deb` mirror the machine's apt configuration (under
// etcApt, normally /etc/apt) uses for suite, so template builds download from the same
// mirror, proxy or snapshot the host is set up for. It falls back to DefaultMirror.
func MachineMirror(etcApt, suite string) string {
	for _, f := range aptSourcesFiles(etcApt) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(f, ".sources") {
			uri = mirrorDeb822(string(b), suite)
		} else {
			uri = mirrorOneLine(string(b), suite)
		}
		if uri != "" {
			return strings.TrimRight(uri, "/")
		}
	}
	return DefaultMirror
}

// mirrorOneLine parses the classic format: `deb [options] URI suite component...`.
func mirrorOneLine(text, suite string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && f[1] == suite {
			return f[0]
		}
	}
	return ""
}

// mirrorDeb822 parses the deb822 format of *.sources files: stanzas of `Key: value` lines
// separated by blank lines.
func mirrorDeb822(text, suite string) string {
	for _, stanza := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		fields := map[string][]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
		}
		if en := fields["enabled"]; len(en) == 1 && en[0] == "no" {
			continue
		}
		if !slices.Contains(fields["types"], "deb") || !slices.Contains(fields["suites"], suite) {
			continue
		}
		if uris := fields["uris"]; len(uris) > 0 {
			return uris[0]
		}
	}
	return ""
}
