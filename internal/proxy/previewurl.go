package proxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// PreviewTarget describes how one client (a browser, a CLI user's machine) reaches the
// public proxy.
type PreviewTarget struct {
	Scheme string // "http" or "https"
	// Domain is the sandbox domain the SDKs are told, with the proxy's port when it is not
	// the scheme's ("hearth.localhost:3002"); empty when there is none.
	Domain string
	// ClientHost is the host (and maybe port) the client reaches the control plane by; the
	// path form is served on it, at ProxyPort.
	ClientHost string
	ProxyPort  int
	// Resolve looks a name up as the client would; nil uses this host's resolver.
	Resolve func(ctx context.Context, host string) ([]string, error)
}

// PreviewURL is the URL a person opens a sandbox port by, and its form: "host"
// (PORT-ID.<domain>, the port's own browser origin) when that name resolves for the client,
// else "path" (/proxy/ID/PORT/ on the proxy, one origin shared with every other path-form
// preview). A .localhost name resolves, to loopback, only for a client on this machine, which
// is the case when it reached the control plane by a loopback name.
func PreviewURL(ctx context.Context, t PreviewTarget, id string, port uint16) (string, string) {
	clientHost := t.ClientHost
	if h, _, err := net.SplitHostPort(clientHost); err == nil {
		clientHost = h
	}
	clientHost = strings.Trim(clientHost, "[]")
	if t.Domain != "" {
		label := strconv.Itoa(int(port)) + "-" + id
		domainHost := t.Domain
		if h, _, err := net.SplitHostPort(t.Domain); err == nil {
			domainHost = h
		}
		if t.resolves(ctx, label+"."+domainHost, clientHost) {
			return t.Scheme + "://" + label + "." + t.Domain + "/", "host"
		}
	}
	proxyHost := clientHost
	if defaultPort := map[string]int{"http": 80, "https": 443}[t.Scheme]; t.ProxyPort > 0 && t.ProxyPort != defaultPort {
		proxyHost = net.JoinHostPort(clientHost, strconv.Itoa(t.ProxyPort))
	} else if strings.Contains(clientHost, ":") {
		proxyHost = "[" + clientHost + "]"
	}
	return fmt.Sprintf("%s://%s%s%s/%d/", t.Scheme, proxyHost, pathPrefix, id, port), "path"
}

func (t PreviewTarget) resolves(ctx context.Context, name, clientHost string) bool {
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		if clientHost == "localhost" || strings.HasSuffix(clientHost, ".localhost") {
			return true
		}
		ip := net.ParseIP(clientHost)
		return ip != nil && ip.IsLoopback()
	}
	lookup := t.Resolve
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addrs, err := lookup(ctx, name)
	return err == nil && len(addrs) > 0
}
