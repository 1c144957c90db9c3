package proxy

import (
	"net/http"
	"net/http/httputil"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// handOff gives r to next, a proxy handler in this process, as the request this proxy
// would have sent it over a socket and the next hop's server would have parsed: hop-by-hop
// and inbound forwarding headers dropped, then rewritten as for any upstream (routing
// headers, X-Forwarded-*), with the form of a request read off a plain connection. next
// writes its response straight to w, whose head gets this hop's edits (editResponseHeader),
// so a response is copied once in this process instead of twice, with no pipe or goroutine
// between the hops. Upgrades pass too: w unwraps to the client's connection for Hijack.
func handOff(w http.ResponseWriter, r *http.Request, rt *routed, next http.Handler) {
	out := r.Clone(r.Context())
	upgrade := upgradeType(r.Header)
	removeHopHeaders(out.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	if upgrade != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upgrade)
	}
	// As httputil.ReverseProxy does before a Rewrite: the client's claims are not passed on.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(k)
	}
	rewrite(&httputil.ProxyRequest{In: r, Out: out})

	u := *out.URL
	u.Scheme, u.Host, u.User = "", "", nil
	out.URL = &u
	out.RequestURI = u.RequestURI()
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.RemoteAddr = inProcessRemoteAddr
	out.TLS = nil // the hop itself is plain
	out.Close = false
	if out.Body == nil {
		out.Body = http.NoBody
	}
	next.ServeHTTP(&handOffWriter{ResponseWriter: w, rt: rt}, out)
}

// handOffWriter is the client's ResponseWriter as the next hop sees it: the response head
// gets this hop's edits when it is written.
type handOffWriter struct {
	http.ResponseWriter
	rt    *routed
	wrote bool
}

func (w *handOffWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		editResponseHeader(w.Header(), w.rt)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *handOffWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends the head (edited) and what is buffered.
func (w *handOffWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the client's connection (Hijack, deadlines,
// full duplex).
func (w *handOffWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1 and their older kin, which
// one hop's connection carries and the next never sees.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders drops the hop-by-hop headers and those the Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upgradeType is the protocol a request asks to upgrade to, or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}
