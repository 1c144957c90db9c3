package web

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"reflect"
	"testing"
)

func TestListeningPorts(t *testing.T) {
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tests := []struct {
		name string
		in   string
		want []listener
	}{
		{"python http.server on 0.0.0.0:8000 and envd", header +
			"   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n" +
			"   1: 00000000:C2FF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n",
			[]listener{{8000, "0.0.0.0"}, {49919, "0.0.0.0"}}},
		{"loopback only", header + "   0: 0100007F:0BB8 00000000:0000 0A 0 0 0 0 0 0 0\n", []listener{{3000, "127.0.0.1"}}},
		{"connections are not listeners", header + "   0: 0100007F:0BB8 0100007F:D431 01 0 0 0 0 0 0 0\n", []listener{}},
		{"IPv6 any, IPv4 loopback on the same port: one entry, the wider", header +
			"   0: 0100007F:1538 00000000:0000 0A 0 0 0 0 0 0 0\n" + header +
			"   0: 00000000000000000000000000000000:1538 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0 0\n",
			[]listener{{5432, "::"}}},
		{"IPv6 loopback", "   0: 00000000000000000000000001000000:22B8 00000000000000000000000000000000:0000 0A 0 0 0\n", []listener{{8888, "::1"}}},
		{"garbage a sandbox made up", "0A 0A 0A\n   0: zzzz:1F40 x 0A\n   0: 00000000:FFFFF x 0A\n   0: 00000000:0000 x 0A\n\x00\xff", []listener{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := listeningPorts(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPreviewLink(t *testing.T) {
	resolver := func(names ...string) func(context.Context, string) ([]string, error) {
		return func(_ context.Context, host string) ([]string, error) {
			for _, n := range names {
				if n == host {
					return []string{"203.0.113.7"}, nil
				}
			}
			return nil, errors.New("no such host")
		}
	}
	tests := []struct {
		name      string
		previews  Previews
		reqHost   string
		tls       bool
		want, how string
	}{
		{"hearth dev in a local browser: host-routed", Previews{Domain: "hearth.localhost:3002", ProxyPort: 3002}, "127.0.0.1:3000", false,
			"http://8000-sbx1.hearth.localhost:3002/", "host"},
		{"dashboard by localhost name", Previews{Domain: "hearth.localhost:3002", ProxyPort: 3002}, "localhost:3000", false,
			"http://8000-sbx1.hearth.localhost:3002/", "host"},
		{".localhost from another machine would be its own loopback: path form", Previews{Domain: "hearth.localhost:3002", ProxyPort: 3002}, "192.0.2.10:3000", false,
			"http://192.0.2.10:3002/proxy/sbx1/8000/", "path"},
		{"a real domain with a wildcard record", Previews{Domain: "sbx.example.com", ProxyPort: 3002, Resolve: resolver("8000-sbx1.sbx.example.com")}, "api.example.com", true,
			"https://8000-sbx1.sbx.example.com/", "host"},
		{"a domain that does not resolve", Previews{Domain: "sbx.example.com", ProxyPort: 3002, Resolve: resolver()}, "api.example.com", false,
			"http://api.example.com:3002/proxy/sbx1/8000/", "path"},
		{"the proxy on the scheme's port: no port in the link", Previews{ProxyPort: 443}, "api.example.com", true,
			"https://api.example.com/proxy/sbx1/8000/", "path"},
		{"no domain, IPv6 dashboard", Previews{ProxyPort: 3002}, "[::1]:3000", false,
			"http://[::1]:3002/proxy/sbx1/8000/", "path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/dashboard/sbx/sbx1/ports", nil)
			r.Host = tt.reqHost
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			got, how := tt.previews.link(context.Background(), r, "sbx1", 8000)
			if got != tt.want || how != tt.how {
				t.Fatalf("link = %s (%s), want %s (%s)", got, how, tt.want, tt.how)
			}
		})
	}
}
