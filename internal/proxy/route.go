// Package proxy forwards HTTP and WebSocket traffic to ports of sandboxes. It is used at
// every hop: the control plane's public proxy and each agent's proxy.
//
// A request names its sandbox and port in one of three ways:
//   - the host "PORT-ID.<domain>" (what E2B's SDKs and signed file URLs use);
//   - the headers E2b-Sandbox-Id and E2b-Sandbox-Port (what the SDKs send to a shared host);
//   - the path "/proxy/ID/PORT/<rest>", whose prefix is stripped before forwarding.
//
// Proxy traffic uses its own HTTP/1.1-only transports, never the HTTP/2 pool of the RPC
// clients, so a busy web app in a sandbox cannot starve a terminal's stream.
package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Headers the E2B SDKs send to address a sandbox on a shared host.
const (
	HeaderSandboxID   = "E2b-Sandbox-Id"
	HeaderSandboxPort = "E2b-Sandbox-Port"
	pathPrefix        = "/proxy/"
)

// Route is a parsed sandbox address.
type Route struct {
	SandboxID string
	Port      uint16
	// Prefix is the "/proxy/ID/PORT" prefix stripped from the path, "" for other forms.
	Prefix string
	// Path is the upstream path (the request's path minus Prefix).
	Path string
}

// ErrNoRoute means the request names no sandbox.
var ErrNoRoute = errors.New("request names no sandbox: use host PORT-ID.<domain>, the E2b-Sandbox-Id and E2b-Sandbox-Port headers, or /proxy/ID/PORT/")

// ParseRoute finds the sandbox and port a request is for. domain may be empty, in which case
// any host whose first label is PORT-ID matches.
func ParseRoute(r *http.Request, domain string) (Route, error) {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if id := r.Header.Get(HeaderSandboxID); id != "" {
		port, err := parsePort(r.Header.Get(HeaderSandboxPort))
		if err != nil {
			return Route{}, fmt.Errorf("%s header: %w", HeaderSandboxPort, err)
		}
		return Route{SandboxID: id, Port: port, Path: path}, nil
	}
	if strings.HasPrefix(path, pathPrefix) {
		rest := path[len(pathPrefix):]
		id, rest, _ := strings.Cut(rest, "/")
		portStr, tail, hasTail := strings.Cut(rest, "/")
		if id == "" || portStr == "" {
			return Route{}, fmt.Errorf("path must be /proxy/ID/PORT/...: %q", path)
		}
		port, err := parsePort(portStr)
		if err != nil {
			return Route{}, fmt.Errorf("path port: %w", err)
		}
		up := "/"
		if hasTail {
			// Concatenate rather than path.Join, so a trailing slash survives.
			up = "/" + tail
		}
		return Route{SandboxID: id, Port: port, Prefix: pathPrefix + id + "/" + portStr, Path: up}, nil
	}
	if id, port, ok := parseHost(r.Host, domain); ok {
		return Route{SandboxID: id, Port: port, Path: path}, nil
	}
	return Route{}, ErrNoRoute
}

// routeDomain drops a port from a configured domain: "hearth.localhost:3002" routes hosts
// under hearth.localhost, whatever port the client reached.
func routeDomain(d string) string {
	if host, _, err := net.SplitHostPort(d); err == nil {
		return host
	}
	return d
}

// parseHost reads "PORT-ID[.domain][:hostport]".
func parseHost(host, domain string) (string, uint16, bool) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	label, rest, _ := strings.Cut(host, ".")
	if domain != "" && !strings.EqualFold(rest, domain) {
		return "", 0, false
	}
	portStr, id, ok := strings.Cut(label, "-")
	if !ok || id == "" {
		return "", 0, false
	}
	port, err := parsePort(portStr)
	if err != nil {
		return "", 0, false
	}
	return strings.ToLower(id), port, true
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}
