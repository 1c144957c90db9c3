package hearth

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/hearthsh/hearth/sdk/go/api"
)

// DefaultSandboxTimeout is how long a new sandbox lives unless told otherwise, as in E2B's
// SDKs.
const DefaultSandboxTimeout = 5 * time.Minute

// DefaultTemplate is the template sandboxes are created from unless told otherwise.
const DefaultTemplate = "base"

// CreateOptions configure a new sandbox. The zero value creates a "base" sandbox with
// internet access that is killed after DefaultSandboxTimeout.
type CreateOptions struct {
	// Template is the template ID or alias (default "base").
	Template string
	// Timeout is how long the sandbox lives before it is killed, or paused with AutoPause
	// (default 5 minutes). The API counts whole seconds.
	Timeout time.Duration
	// Metadata is stored with the sandbox and can filter lists.
	Metadata map[string]string
	// Envs are set in every process the sandbox runs.
	Envs map[string]string
	// AutoPause pauses the sandbox at its timeout instead of killing it.
	AutoPause bool
	// Secure is sent for compatibility with E2B's API (default true). Hearth, like E2B today,
	// issues every sandbox an envd access token whatever it says; the Sandbox handle sends it.
	Secure *bool
	// AllowInternetAccess false denies all outbound traffic but Network.AllowOut (default
	// true).
	AllowInternetAccess *bool
	// Network is the sandbox's outbound policy and whether its ports are public.
	Network *NetworkOptions
}

// NetworkOptions are E2B's network options. AllowOut and DenyOut hold IPv4 addresses and
// CIDR ranges (the API refuses domain names); AllowOut wins. AllowPublicTraffic false makes
// the sandbox's ports need its traffic access token (header E2b-Traffic-Access-Token);
// default true. Hearth refuses the other fields (EgressProxy, Rules, MaskRequestHost,
// HTTPSPorts) when set.
type NetworkOptions = api.SandboxNetwork

// NetworkUpdate replaces a sandbox's outbound policy as a whole: omitted lists are cleared
// and a nil AllowInternetAccess means true.
type NetworkUpdate = api.NetworkUpdate

// Create starts a new sandbox and returns a handle to it.
func (c *Client) Create(ctx context.Context, opts CreateOptions) (*Sandbox, error) {
	// Every option is sent, defaults included, as E2B's SDKs do.
	body := api.NewSandbox{
		TemplateID:          opts.Template,
		Timeout:             ptr(timeoutSeconds(opts.Timeout)),
		Metadata:            opts.Metadata,
		EnvVars:             opts.Envs,
		AutoPause:           ptr(opts.AutoPause),
		Secure:              ptr(boolOr(opts.Secure, true)),
		AllowInternetAccess: ptr(boolOr(opts.AllowInternetAccess, true)),
		Network:             opts.Network,
	}
	if body.TemplateID == "" {
		body.TemplateID = DefaultTemplate
	}
	var out CreatedSandbox
	op := "create sandbox from template " + body.TemplateID
	if _, _, err := c.call(ctx, op, http.MethodPost, "/sandboxes", nil, body, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	return c.handle(out), nil
}

// GetSandbox returns a sandbox's details, including its envd access token.
func (c *Client) GetSandbox(ctx context.Context, id string) (*SandboxInfo, error) {
	var out SandboxInfo
	if _, _, err := c.call(ctx, "get sandbox "+id, http.MethodGet, "/sandboxes/"+url.PathEscape(id), nil, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// Open returns a handle to an existing sandbox without changing it: it reads the sandbox's
// details for its envd access token. The handle works only while the sandbox runs (or when
// the proxy resumes it on traffic); Info().State says which it was.
func (c *Client) Open(ctx context.Context, id string) (*Sandbox, error) {
	info, err := c.GetSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	sb := c.handle(CreatedSandbox{
		SandboxID: info.SandboxID, TemplateID: info.TemplateID, Alias: info.Alias, ClientID: info.ClientID,
		EnvdVersion: info.EnvdVersion, EnvdAccessToken: info.EnvdAccessToken, Domain: info.Domain,
	})
	sb.state = info.State
	return sb, nil
}

// Connect returns a handle to a sandbox, resuming it if it is paused; resumed says whether it
// was. A running sandbox's timeout is only ever extended to timeout from now, never shortened
// (zero means DefaultSandboxTimeout).
func (c *Client) Connect(ctx context.Context, id string, timeout time.Duration) (sb *Sandbox, resumed bool, err error) {
	var out CreatedSandbox
	body := api.TimeoutBody{Timeout: ptr(timeoutSeconds(timeout))}
	status, _, err := c.call(ctx, "connect to sandbox "+id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/connect",
		nil, body, &out, http.StatusOK, http.StatusCreated)
	if err != nil {
		return nil, false, err
	}
	return c.handle(out), status == http.StatusCreated, nil
}

// ResumeOptions configure Resume.
type ResumeOptions struct {
	// Timeout is the resumed sandbox's new lifetime (default 5 minutes).
	Timeout time.Duration
	// AutoPause pauses the sandbox again at its timeout instead of killing it.
	AutoPause bool
}

// Resume resumes a paused sandbox with POST /sandboxes/{id}/resume, which E2B deprecates in
// favour of Connect and Hearth still serves. It fails with a conflict (IsConflict) when the
// sandbox is not paused.
func (c *Client) Resume(ctx context.Context, id string, opts ResumeOptions) (*Sandbox, error) {
	var out CreatedSandbox
	body := api.ResumeBody{Timeout: ptr(timeoutSeconds(opts.Timeout)), AutoPause: ptr(opts.AutoPause)}
	if _, _, err := c.call(ctx, "resume sandbox "+id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/resume",
		nil, body, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	return c.handle(out), nil
}

// UpdateNetwork replaces a sandbox's outbound policy: a running sandbox gets it at once
// (connections already open included), a paused one when it resumes.
func (c *Client) UpdateNetwork(ctx context.Context, id string, u NetworkUpdate) error {
	_, _, err := c.call(ctx, "update network of sandbox "+id, http.MethodPut, "/sandboxes/"+url.PathEscape(id)+"/network",
		nil, u, nil, http.StatusNoContent)
	return err
}

// Pause snapshots a running sandbox to disk and stops it; Connect or Resume bring it back.
// It fails with a conflict (IsConflict) when the sandbox is not running.
func (c *Client) Pause(ctx context.Context, id string) error {
	_, _, err := c.call(ctx, "pause sandbox "+id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/pause",
		nil, nil, nil, http.StatusNoContent)
	return err
}

// Kill destroys a sandbox, running or paused.
func (c *Client) Kill(ctx context.Context, id string) error {
	_, _, err := c.call(ctx, "kill sandbox "+id, http.MethodDelete, "/sandboxes/"+url.PathEscape(id),
		nil, nil, nil, http.StatusNoContent)
	return err
}

// SetTimeout makes the sandbox expire timeout from now, replacing its previous deadline,
// shorter or longer.
func (c *Client) SetTimeout(ctx context.Context, id string, timeout time.Duration) error {
	body := api.TimeoutBody{Timeout: ptr(timeoutSeconds(timeout))}
	_, _, err := c.call(ctx, "set timeout of sandbox "+id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/timeout",
		nil, body, nil, http.StatusNoContent)
	return err
}

// ListTemplates returns the templates the API key's team can use.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out []Template
	if _, _, err := c.call(ctx, "list templates", http.MethodGet, "/templates", nil, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out, nil
}

// timeoutSeconds converts a timeout to the API's whole seconds, rounding up so a sub-second
// timeout is not sent as zero, and applying the default to zero.
func timeoutSeconds(d time.Duration) int {
	if d <= 0 {
		d = DefaultSandboxTimeout
	}
	return int((d + time.Second - 1) / time.Second)
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// Bool returns a pointer to b, for the optional booleans of CreateOptions.
func Bool(b bool) *bool { return &b }

// ptr returns a pointer to v, for the optional fields of request bodies.
func ptr[T any](v T) *T { return &v }

// ForkOptions configure Fork.
type ForkOptions struct {
	// Count is how many copies to make (1 to 100; zero means 1).
	Count int
	// Timeout is each copy's lifetime (default 5 minutes).
	Timeout time.Duration
}

// ForkResult is one copy a fork made: a handle, or the error that kept it from starting.
type ForkResult struct {
	Sandbox *Sandbox
	Err     error
}

// Fork copies running sandbox id — its files, memory and running processes — into new
// sandboxes; the parent runs on. The result has one entry per copy. It fails as a whole
// (IsConflict) when the sandbox is not running, and with HTTP 501 on runtimes that cannot fork.
func (c *Client) Fork(ctx context.Context, id string, opts ForkOptions) ([]ForkResult, error) {
	if opts.Count == 0 {
		opts.Count = 1
	}
	body := api.ForkBody{Timeout: ptr(timeoutSeconds(opts.Timeout)), Count: ptr(opts.Count)}
	var out []api.ForkResult
	op := "fork sandbox " + id
	if _, _, err := c.call(ctx, op, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/fork", nil, body, &out, http.StatusCreated); err != nil {
		return nil, err
	}
	res := make([]ForkResult, len(out))
	for i, r := range out {
		switch {
		case r.Sandbox != nil:
			res[i].Sandbox = c.handle(*r.Sandbox)
		case r.Error != nil:
			res[i].Err = &APIError{Status: r.Error.Code, Message: r.Error.Message, Op: op}
		default:
			res[i].Err = &APIError{Status: http.StatusInternalServerError, Message: "no sandbox and no error in the answer", Op: op}
		}
	}
	return res, nil
}
