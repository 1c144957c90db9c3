package hearth

import (
	"crypto/tls"
	"net/http"
	"os"
	"strings"
)

// Default endpoints of a local Hearth (hearth dev).
const (
	DefaultAPIURL     = "http://localhost:3000"
	DefaultSandboxURL = "http://localhost:3002"
)

// Client is a connection to a Hearth (or E2B-compatible) deployment. Its fields may be set
// directly; NewClient fills them from options and the environment.
type Client struct {
	// APIURL is the REST API's base URL, e.g. http://localhost:3000.
	APIURL string
	// SandboxURL is the sandbox proxy's base URL, e.g. http://localhost:3002.
	SandboxURL string
	// APIKey is sent as X-API-Key on every REST request.
	APIKey string
	// HTTP sends every request. It must not set a Timeout: command and PTY output arrive on
	// long-lived streams; bound calls with contexts instead. Nil means a client with an
	// HTTP/1.1-only transport.
	HTTP *http.Client
}

// Option changes a Client built by NewClient.
type Option func(*Client)

// WithAPIURL sets the REST API's base URL.
func WithAPIURL(u string) Option { return func(c *Client) { c.APIURL = u } }

// WithSandboxURL sets the sandbox proxy's base URL.
func WithSandboxURL(u string) Option { return func(c *Client) { c.SandboxURL = u } }

// WithAPIKey sets the API key.
func WithAPIKey(k string) Option { return func(c *Client) { c.APIKey = k } }

// WithHTTPClient sets the HTTP client every request goes through.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.HTTP = h } }

// NewClient returns a client configured from the environment, then from opts, which win.
// HEARTH_API_URL, HEARTH_SANDBOX_URL and HEARTH_API_KEY take precedence over E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY, so code written for E2B's SDKs and Hearth's own settings
// can live side by side; the URLs default to a local hearth dev.
func NewClient(opts ...Option) *Client {
	c := &Client{
		APIURL:     envFirst(DefaultAPIURL, "HEARTH_API_URL", "E2B_API_URL"),
		SandboxURL: envFirst(DefaultSandboxURL, "HEARTH_SANDBOX_URL", "E2B_SANDBOX_URL"),
		APIKey:     envFirst("", "HEARTH_API_KEY", "E2B_API_KEY"),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// envFirst returns the first non-empty variable of names, else def.
func envFirst(def string, names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return def
}

// httpClient returns the client to send requests with.
func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// defaultHTTP speaks HTTP/1.1 only (see the package doc) and is shared so connections are
// reused across clients.
var defaultHTTP = &http.Client{Transport: newHTTP1Transport()}

func newHTTP1Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.MaxIdleConnsPerHost = 32
	return t
}

// apiBase and sandboxBase trim the trailing slashes users often leave on URLs.
func (c *Client) apiBase() string     { return strings.TrimRight(c.APIURL, "/") }
func (c *Client) sandboxBase() string { return strings.TrimRight(c.SandboxURL, "/") }
