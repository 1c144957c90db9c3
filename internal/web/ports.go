package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/proxy"
	hearth "github.com/hearthsh/hearth/sdk/go"
)

// envdPort is envd's own port: the API, not something to preview.
const envdPort = 49983

// maxPorts bounds the ports listed for one sandbox; what the sandbox reports is its own to
// make up.
const maxPorts = 64

// Previews says how a browser reaches sandbox ports: the sandbox domain the SDKs are told
// (host routing PORT-ID.<Domain>, with the proxy's port when it is not the scheme's) and the
// proxy's port, for the path form /proxy/ID/PORT/ on the host the browser reached the
// dashboard by.
type Previews struct {
	Domain    string
	ProxyPort int
	// Resolve looks a name up as the browser would; nil uses the host's resolver. Tests set it.
	Resolve func(ctx context.Context, host string) ([]string, error)
}

// openPort is one listening port of a sandbox with a link to it.
type openPort struct {
	Port    uint16 `json:"port"`
	Address string `json:"address"` // what it is bound to, e.g. 0.0.0.0 or 127.0.0.1
	URL     string `json:"url"`
	// Form is "host" (PORT-ID.<domain>, its own browser origin) or "path" (/proxy/ID/PORT/,
	// sharing the proxy's origin with every other path-form preview).
	Form string `json:"form"`
}

// listPorts answers the sandbox page's open ports: TCP sockets listening in the sandbox,
// read from its /proc/net/tcp and tcp6, with a preview link for each.
func (h *Handler) listPorts(w http.ResponseWriter, r *http.Request, key string) {
	sb, ok := h.envdOf(w, r, key)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), fileOpTimeout)
	defer cancel()
	res, err := sb.Commands.Run(ctx, "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | head -c 1048576",
		&hearth.CommandOptions{User: "root", Timeout: 10 * time.Second})
	if err != nil && res == nil {
		jsonError(w, http.StatusBadGateway, fmt.Sprintf("read the sandbox's sockets: %v", err))
		return
	}
	id := r.PathValue("id")
	ports := []openPort{}
	for _, l := range listeningPorts(res.Stdout) {
		if l.port == envdPort {
			continue
		}
		u, form := h.previews.link(ctx, r, id, l.port)
		ports = append(ports, openPort{Port: l.port, Address: l.addr, URL: u, Form: form})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"ports": ports})
}

type listener struct {
	port uint16
	addr string
}

// listeningPorts reads the LISTEN sockets of /proc/net/tcp and /proc/net/tcp6 text, one per
// port (an IPv4 and IPv6 socket on one port are one entry, the wider address kept), sorted
// by port. Malformed lines are skipped.
func listeningPorts(procNet string) []listener {
	byPort := map[uint16]string{}
	sc := bufio.NewScanner(strings.NewReader(procNet))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		hexAddr, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || p == 0 {
			continue
		}
		addr, ok := procAddr(hexAddr)
		if !ok {
			continue
		}
		port := uint16(p)
		if prev, seen := byPort[port]; !seen || (isLoopback(prev) && !isLoopback(addr)) {
			byPort[port] = addr
		}
		if len(byPort) >= maxPorts {
			break
		}
	}
	out := make([]listener, 0, len(byPort))
	for p, a := range byPort {
		out = append(out, listener{p, a})
	}
	slices.SortFunc(out, func(a, b listener) int { return int(a.port) - int(b.port) })
	return out
}

// procAddr decodes /proc/net's hex address: 8 digits (IPv4) or 32 (IPv6), each 32-bit word
// in host byte order (little-endian on the machines Hearth runs on).
func procAddr(h string) (string, bool) {
	if len(h) != 8 && len(h) != 32 {
		return "", false
	}
	b := make(net.IP, len(h)/2)
	for w := 0; w < len(b); w += 4 {
		v, err := strconv.ParseUint(h[2*w:2*w+8], 16, 32)
		if err != nil {
			return "", false
		}
		b[w], b[w+1], b[w+2], b[w+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	return b.String(), true
}

func isLoopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// link is the URL a browser opens a sandbox port by (see proxy.PreviewURL), for the browser
// that reached the dashboard at r.Host.
func (p Previews) link(ctx context.Context, r *http.Request, id string, port uint16) (string, string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return proxy.PreviewURL(ctx, proxy.PreviewTarget{Scheme: scheme, Domain: p.Domain, ClientHost: r.Host,
		ProxyPort: p.ProxyPort, Resolve: p.Resolve}, id, port)
}
