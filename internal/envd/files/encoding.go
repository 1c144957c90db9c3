package files

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

const (
	encIdentity = "identity"
	encGzip     = "gzip"
)

// negotiateEncoding picks the response encoding from Accept-Encoding (RFC 9110 §12.5.3):
// gzip when the client prefers it, identity otherwise. Identity is acceptable unless the
// client rules it out ("identity;q=0" or "*;q=0"); a client that accepts neither gets an
// error, answered with 406 as E2B does.
func negotiateEncoding(header string) (string, error) {
	if strings.TrimSpace(header) == "" {
		return encIdentity, nil
	}
	type pref struct {
		name string
		q    float64
	}
	var prefs []pref
	identityQ, starQ := -1.0, -1.0
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		switch name {
		case encIdentity:
			identityQ = q
		case "*":
			starQ = q
		}
		prefs = append(prefs, pref{name, q})
	}
	sort.SliceStable(prefs, func(i, j int) bool { return prefs[i].q > prefs[j].q })
	for _, p := range prefs {
		if p.q <= 0 {
			continue
		}
		switch p.name {
		case encGzip:
			return encGzip, nil
		case encIdentity:
			return encIdentity, nil
		case "*":
			if identityQ == 0 {
				return encGzip, nil
			}
			return encIdentity, nil
		}
	}
	if identityQ == 0 || (identityQ < 0 && starQ == 0) {
		return "", fmt.Errorf("no acceptable encoding in Accept-Encoding %q; supported: identity, gzip", header)
	}
	return encIdentity, nil
}

// requestBody returns the upload body decoded per Content-Encoding: identity or gzip (the
// SDKs' write with gzip: true). Anything else is rejected so a compressed body is never
// stored as if it were the file.
func requestBody(r *http.Request) (io.ReadCloser, error) {
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
	case "", encIdentity:
		return r.Body, nil
	case encGzip:
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("request body is empty but Content-Encoding is gzip")
			}
			return nil, fmt.Errorf("request body is not valid gzip: %w", err)
		}
		return zr, nil
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q; send identity or gzip", enc)
	}
}
