package hearth

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/hearthsh/hearth/internal/gen/filesystem/filesystemconnect"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// EnvdPort is the port envd listens on inside every sandbox.
const EnvdPort = 49983

// Headers the sandbox proxy routes by and envd authenticates with, as E2B's SDKs send them.
const (
	headerSandboxID   = "E2b-Sandbox-Id"
	headerSandboxPort = "E2b-Sandbox-Port"
	headerAccessToken = "X-Access-Token"
	// headerKeepalive asks envd for keepalive events on idle streams, so proxies and load
	// balancers do not cut a quiet command's output stream.
	headerKeepalive   = "Keepalive-Ping-Interval"
	keepaliveInterval = "50"
)

// Sandbox is a handle to one sandbox: its lifecycle through the REST API and its processes and
// files through envd. It is safe for concurrent use.
type Sandbox struct {
	// ID is the sandbox ID.
	ID string
	// Commands runs commands in the sandbox.
	Commands *Commands
	// Files reads and writes the sandbox's filesystem.
	Files *Files
	// PTY runs interactive terminals in the sandbox.
	PTY *PTY

	c     *Client
	info  CreatedSandbox
	state SandboxState
	envd  *envdConn
}

// Attach returns a handle to a sandbox whose ID (and envd access token, if it has one) the
// caller already knows, without calling the API. Use it to reach an envd directly, e.g. one
// running on this machine for tests: envd ignores the routing headers.
func (c *Client) Attach(id, envdAccessToken string) *Sandbox {
	return c.handle(CreatedSandbox{SandboxID: id, EnvdAccessToken: envdAccessToken})
}

// handle builds a Sandbox from the API's description of it.
func (c *Client) handle(info CreatedSandbox) *Sandbox {
	conn := newEnvdConn(c, info.SandboxID, info.EnvdAccessToken)
	return &Sandbox{
		ID:       info.SandboxID,
		Commands: &Commands{conn: conn},
		Files:    &Files{conn: conn},
		PTY:      &PTY{conn: conn},
		c:        c,
		info:     info,
		state:    StateRunning,
		envd:     conn,
	}
}

// Info returns what the API said about the sandbox when the handle was made.
func (s *Sandbox) Info() CreatedSandbox { return s.info }

// State is the sandbox's state when the handle was made: running for handles from Create,
// Connect, Resume and Attach, the reported state for handles from Open.
func (s *Sandbox) State() SandboxState { return s.state }

// Kill destroys the sandbox.
func (s *Sandbox) Kill(ctx context.Context) error { return s.c.Kill(ctx, s.ID) }

// Pause pauses the sandbox.
func (s *Sandbox) Pause(ctx context.Context) error { return s.c.Pause(ctx, s.ID) }

// SetTimeout makes the sandbox expire timeout from now.
func (s *Sandbox) SetTimeout(ctx context.Context, timeout time.Duration) error {
	return s.c.SetTimeout(ctx, s.ID, timeout)
}

// envdConn is how a sandbox's services reach its envd: through the sandbox proxy, with the
// routing and token headers on every request.
type envdConn struct {
	base    string
	http    *http.Client
	process processconnect.ProcessClient
	fs      filesystemconnect.FilesystemClient
}

func newEnvdConn(c *Client, id, token string) *envdConn {
	base := c.sandboxBase()
	inner := c.httpClient()
	hc := &http.Client{
		Transport:     &sandboxTransport{next: transportOf(inner), id: id, token: token},
		CheckRedirect: inner.CheckRedirect,
		Jar:           inner.Jar,
	}
	return &envdConn{
		base:    base,
		http:    hc,
		process: processconnect.NewProcessClient(hc, base),
		fs:      filesystemconnect.NewFilesystemClient(hc, base),
	}
}

func transportOf(h *http.Client) http.RoundTripper {
	if h.Transport != nil {
		return h.Transport
	}
	return http.DefaultTransport
}

// sandboxTransport adds the headers that route a request to the sandbox's envd and
// authenticate it there.
type sandboxTransport struct {
	next  http.RoundTripper
	id    string
	token string
}

func (t *sandboxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context()) // a RoundTripper must not modify the caller's request
	req.Header.Set(headerSandboxID, t.id)
	req.Header.Set(headerSandboxPort, strconv.Itoa(EnvdPort))
	if t.token != "" {
		req.Header.Set(headerAccessToken, t.token)
	}
	return t.next.RoundTrip(req)
}

// setUser selects the Linux user a request acts as: envd reads it from HTTP Basic auth with
// an empty password. No user means the sandbox's default user.
func setUser(h http.Header, user string) {
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
}
