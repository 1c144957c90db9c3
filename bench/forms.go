package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// form is one way of reaching the load server: directly or through one of the public
// proxy's three routing forms.
type form string

const (
	formDirect  form = "direct"
	formHeaders form = "headers"
	formPath    form = "path"
	formHost    form = "host"
)

var proxyForms = []form{formHeaders, formPath, formHost}

// proxyBase is set from the config: the public proxy's base URL.
var proxyBase string

// url is the address a request in form f for path (with its query) goes to.
func (t *target) url(f form, path string) string {
	switch f {
	case formDirect:
		return fmt.Sprintf("http://%s:%d%s", t.guest, loadPort, path)
	case formPath:
		return fmt.Sprintf("%s/proxy/%s/%d%s", strings.TrimRight(proxyBase, "/"), t.id, loadPort, path)
	default:
		return strings.TrimRight(proxyBase, "/") + path
	}
}

// header sets what form f routes by, plus the traffic token on every proxied form.
func (t *target) header(f form, h http.Header) {
	if f == formDirect {
		return
	}
	if t.token != "" {
		h.Set("E2b-Traffic-Access-Token", t.token)
	}
	if f == formHeaders {
		h.Set("E2b-Sandbox-Id", t.id)
		h.Set("E2b-Sandbox-Port", fmt.Sprint(loadPort))
	}
}

// host is the Host header for form f, "" for the URL's own.
func (t *target) host(f form) string {
	if f == formHost {
		domain := t.domain
		if domain == "" {
			domain = "localhost"
		}
		return fmt.Sprintf("%d-%s.%s", loadPort, t.id, domain)
	}
	return ""
}

// request builds a GET for path in form f.
func (t *target) request(ctx context.Context, f form, path string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url(f, path), nil)
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", f, path, err)
	}
	t.header(f, req.Header)
	if h := t.host(f); h != "" {
		req.Host = h
	}
	return req, nil
}
