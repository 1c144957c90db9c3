package codeinterp

import (
	"encoding/json"
	"strings"
)

// mimeFields maps the MIME types of a kernel's display data to the result fields the E2B
// SDKs read (Result.text, .html, ... .chart).
var mimeFields = []struct{ mime, field string }{
	{"text/plain", "text"},
	{"text/html", "html"},
	{"text/markdown", "markdown"},
	{"image/svg+xml", "svg"},
	{"image/png", "png"},
	{"image/jpeg", "jpeg"},
	{"application/pdf", "pdf"},
	{"text/latex", "latex"},
	{"application/json", "json"},
	{"application/javascript", "javascript"},
	{"e2b/data", "data"},
	{"e2b/chart", "chart"},
}

// resultLine turns the data of a display_data (main=false) or execute_result (main=true)
// into a result line. Known MIME types become their fields; the rest go to extra under
// their MIME type. No field is made up: a result without text/plain has no text.
func resultLine(data map[string]json.RawMessage, main bool) line {
	l := line{"type": "result", "is_main_result": main}
	rest := map[string]json.RawMessage{}
	for k, v := range data {
		rest[k] = v
	}
	for _, m := range mimeFields {
		v, ok := rest[m.mime]
		if !ok {
			continue
		}
		delete(rest, m.mime)
		if string(v) == "null" {
			continue
		}
		if m.field == "text" {
			var s string
			if json.Unmarshal(v, &s) == nil {
				l["text"] = stripQuotes(s)
				continue
			}
		}
		l[m.field] = v
	}
	extra := map[string]json.RawMessage{}
	for k, v := range rest {
		extra[k] = v
	}
	l["extra"] = extra
	return l
}

// stripQuotes removes one pair of quotes around a whole repr, as E2B does: Python's 'bar'
// arrives as bar.
func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '\'' && s[len(s)-1] == '\'' || s[0] == '"' && s[len(s)-1] == '"') {
		return s[1 : len(s)-1]
	}
	return s
}

// joinTraceback joins a kernel's traceback frames into one string, one frame a line.
func joinTraceback(frames []string) string {
	return strings.Join(frames, "\n")
}
