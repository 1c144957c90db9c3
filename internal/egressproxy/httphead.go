package egressproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// maxHeadBytes caps the HTTP request head read before the host is known.
const maxHeadBytes = 16 << 10

// readHTTPHost reads the first request head from r and returns every byte read (the
// head and whatever of the body came with it, to replay upstream) and the request's host
// without port.
//
// Only a connection's first request is checked. Later requests on a keep-alive
// connection go to the same upstream, as a browser's connection to one host does; that
// is fine because the upstream was chosen from the allowed host name, not from anything
// the later requests say.
func readHTTPHost(r io.Reader) (raw []byte, host string, err error) {
	var buf bytes.Buffer
	// The tee sees every byte bufio pulls from the connection, including read-ahead
	// past the head, so buf is exactly what must be replayed.
	br := bufio.NewReaderSize(io.TeeReader(io.LimitReader(r, maxHeadBytes), &buf), 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		if buf.Len() >= maxHeadBytes {
			return buf.Bytes(), "", fmt.Errorf("HTTP request head is over %d bytes", maxHeadBytes)
		}
		return buf.Bytes(), "", fmt.Errorf("read HTTP request head: %w", err)
	}
	// For an absolute-form target (GET http://x/) net/http takes the host from the URL,
	// which is also what a server would obey.
	host = req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" { // HTTP/1.0 without Host: the caller refuses it as nameless
		return buf.Bytes(), "", nil
	}
	if err := checkHostName(host); err != nil {
		return buf.Bytes(), "", err
	}
	return buf.Bytes(), strings.TrimSuffix(strings.ToLower(host), "."), nil
}
