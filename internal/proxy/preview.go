package proxy

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// A page served under /proxy/ID/PORT/ believes it is at the root of its server: it loads
// "/static/app.js", calls "/api/…" and opens WebSockets on "/api/…/channels" without the
// prefix. Such a request names no sandbox, so the proxy routes it by where it came from: the
// Referer when that is a path-form URL on this proxy's host, else the preview cookie the
// proxy sets on the pages it serves under the prefix. (Browsers send no Referer on WebSocket
// handshakes, so the cookie is what routes those.)
//
// The hint only says which sandbox and port; it grants nothing. A hinted request is resolved
// and checked exactly like one that spelled /proxy/ID/PORT/ itself (the traffic token of a
// private sandbox, the sandbox's state), and envd's port is never reachable by a hint at all.
// Every path-form preview shares the proxy's one browser origin, so a page of one sandbox can
// already send requests to any other path-form preview whose ID it knows; a hint lets it do
// no more than that (see docs/security.md).

// PreviewCookie names the cookie that routes a path-form page's requests that leave the
// prefix. Its value is "ID.PORT". It is HttpOnly (a page's scripts cannot read which sandbox
// the browser last previewed), SameSite=Strict (a cross-site page cannot navigate the browser
// into it), never forwarded to a sandbox, and a sandbox cannot set it.
const PreviewCookie = "hearth_preview"

// maxPreviewID bounds a sandbox ID read from a hint (E2B's IDs are 20 characters).
const maxPreviewID = 64

// errPreviewWorker refuses a service worker script outside the prefix: registered at
// "/sw.js", its scope would be "/", and it would see every path-form preview's requests.
var errPreviewWorker = errors.New("a service worker outside /proxy/ID/PORT/ would control every path-form preview of this browser: register it under the prefix, or open the app by host (PORT-ID.<domain>)")

// errPreviewEnvd refuses a hint that names envd's port.
var errPreviewEnvd = errors.New("a request outside /proxy/ID/PORT/ is never routed to envd's port (49983): name the sandbox in the path, the host or the E2b-Sandbox-Id header")

// previewRoute routes a request that names no sandbox by its Referer or the preview cookie.
// It returns ok false when neither gives a route, and an error when the hint names envd.
// The route keeps the request's path as it is and carries the Prefix, so redirects the
// server sends are rewritten into the prefix.
func previewRoute(r *http.Request) (Route, bool, error) {
	id, port, ok, envd := refererTarget(r)
	if envd {
		return Route{}, false, errPreviewEnvd
	}
	if !ok {
		var v string
		if v, ok = previewCookie(r); ok {
			idStr, portStr, _ := strings.Cut(v, ".")
			id, port, ok, envd = parseTarget(idStr, portStr)
			if envd {
				return Route{}, false, errPreviewEnvd
			}
		}
	}
	if !ok {
		return Route{}, false, nil
	}
	if r.Header.Get("Service-Worker") == "script" { // what browsers send when fetching one
		return Route{}, false, errPreviewWorker
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	return Route{SandboxID: id, Port: port, Prefix: previewPrefix(id, port), Path: path}, true, nil
}

func previewPrefix(id string, port uint16) string {
	return pathPrefix + id + "/" + itoa(port)
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// refererTarget reads the sandbox and port of a Referer that is a path-form URL on the
// request's own host ("http(s)://<Host>/proxy/ID/PORT[/…]"). A Referer on another host, or
// one that is not a path-form URL, gives ok false. envd is true when the Referer's port,
// percent-decoded, is envd's.
func refererTarget(r *http.Request) (id string, port uint16, ok, envd bool) {
	ref := r.Header.Get("Referer")
	if ref == "" || r.Host == "" {
		return "", 0, false, false
	}
	u, err := url.Parse(ref)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || !strings.EqualFold(u.Host, r.Host) {
		return "", 0, false, false
	}
	rest, found := strings.CutPrefix(u.EscapedPath(), pathPrefix)
	if !found {
		return "", 0, false, false
	}
	idStr, rest, _ := strings.Cut(rest, "/")
	portStr, _, _ := strings.Cut(rest, "/")
	return parseTarget(idStr, portStr)
}

// parseTarget validates a hint's ID and port strictly: an ID of [A-Za-z0-9_-] and a port in
// decimal without leading zeros, nothing escaped. envd is true when the port, decoded as envd's router
// would, is envd's, whatever else is wrong with the hint.
func parseTarget(idStr, portStr string) (id string, port uint16, ok, envd bool) {
	if decodedPort(portStr) == strconv.Itoa(EnvdPort) {
		return "", 0, false, true
	}
	if !validPreviewID(idStr) || !allDigits(portStr) {
		return "", 0, false, false
	}
	p, err := parsePort(portStr)
	if err != nil || itoa(p) != portStr { // only the form the proxy writes: no leading zeros
		return "", 0, false, false
	}
	return idStr, p, true, false
}

// decodedPort percent-decodes a port segment up to maxUnescapes times and drops leading
// zeros, so "%34%39983" and "049983" are recognised as envd's port.
func decodedPort(s string) string {
	for i := 0; i < maxUnescapes && strings.Contains(s, "%"); i++ {
		u, err := url.PathUnescape(s)
		if err != nil {
			break
		}
		s = u
	}
	if t := strings.TrimLeft(s, "0"); t != "" {
		return t
	}
	return s
}

func validPreviewID(s string) bool {
	if s == "" || len(s) > maxPreviewID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// previewCookie returns the preview cookie's value. More than one cookie of that name (a
// page's script can add one with another Path) is ambiguous and counts as none.
func previewCookie(r *http.Request) (string, bool) {
	cs := r.CookiesNamed(PreviewCookie)
	if len(cs) != 1 {
		return "", false
	}
	return cs[0].Value, true
}

// previewSetCookie is the Set-Cookie header that points unprefixed requests at route.
func previewSetCookie(route Route, secure bool) string {
	c := &http.Cookie{
		Name:     PreviewCookie,
		Value:    route.SandboxID + "." + itoa(route.Port),
		Path:     "/",
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteStrictMode,
	}
	return c.String()
}

// stripPreviewCookie removes the preview cookie from the Cookie headers going to a sandbox:
// which sandbox the browser last previewed is not the sandbox's business.
func stripPreviewCookie(h http.Header) {
	lines := h.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	var kept []string
	changed := false
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			p := strings.TrimSpace(part)
			if p == "" {
				continue
			}
			if isPreviewCookie(p) {
				changed = true
				continue
			}
			kept = append(kept, p)
		}
	}
	if !changed {
		return
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// stripPreviewSetCookie drops a sandbox's attempts to set (or clear) the preview cookie.
func stripPreviewSetCookie(h http.Header) {
	vs := h.Values("Set-Cookie")
	if len(vs) == 0 {
		return
	}
	kept := vs[:0:0]
	for _, v := range vs {
		nv, _, _ := strings.Cut(v, ";")
		if !isPreviewCookie(nv) {
			kept = append(kept, v)
		}
	}
	if len(kept) == len(vs) {
		return
	}
	h.Del("Set-Cookie")
	for _, v := range kept {
		h.Add("Set-Cookie", v)
	}
}

// isPreviewCookie reports whether a cookie's "name=value" is the preview cookie's, also in
// the nameless form "=hearth_preview=…" that some browsers store and send as "hearth_preview=…".
func isPreviewCookie(nv string) bool {
	nv = strings.TrimLeft(nv, " \t=")
	name, _, _ := strings.Cut(nv, "=")
	return strings.TrimSpace(name) == PreviewCookie
}

// isHTML reports whether a response is a page, the kind of response that sets the cookie.
func isHTML(h http.Header) bool {
	ct := strings.ToLower(h.Get("Content-Type"))
	return strings.HasPrefix(ct, "text/html") || strings.HasPrefix(ct, "application/xhtml+xml")
}
