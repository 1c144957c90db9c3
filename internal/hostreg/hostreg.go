// Package hostreg is how host agents register with the control plane: every few seconds an
// agent POSTs a heartbeat with its addresses, capacity and built templates to
// /hearth/v1/hosts/{id}/heartbeat. A host that stops sending them is marked down.
//
// Credentials, in both directions:
//   - Every heartbeat carries the shared agent token (Authorization: Bearer). The first one
//     for a host ID is answered with a per-host token (Answer.HostToken), which the agent keeps
//     in a file and sends with every later heartbeat (HostTokenHeader); the control plane
//     stores only its hash and refuses heartbeats for that ID without it, so holders of the
//     shared token cannot take a registered host over.
//   - The agent sends a random nonce with each heartbeat and the control plane answers with
//     Proof, an HMAC of it under the agent token, so the agent accepts a host token only
//     from a control plane that holds the agent token.
//   - The control plane's calls to the agent carry the agent token too: Authorization:
//     Bearer on hostagent.v1, ProxyAuthHeader on the proxy hop.
package hostreg

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hearthsh/hearth/internal/durable"
)

// Headers of the agent protocol.
const (
	// HostTokenHeader carries a registered host's own token on its heartbeats.
	HostTokenHeader = "Hearth-Host-Token"
	// NonceHeader is the agent's challenge on a heartbeat; ProofHeader the answer.
	NonceHeader = "Hearth-Nonce"
	ProofHeader = "Hearth-Proof"
	// ProxyAuthHeader carries the agent token on the control plane's proxy hop to an agent
	// (Authorization there belongs to the sandbox's own app). The agent removes it before
	// anything reaches a sandbox.
	ProxyAuthHeader = "Hearth-Agent-Token"
)

// Answer is the body of a heartbeat's answer when the control plane has something to say
// (200): the host's own token when this heartbeat registered the host, and the resolutions
// of the warm pool refs the heartbeat asked about (Heartbeat.WarmPool). With nothing to say
// it answers 204 without a body; agents accept either, and a control plane from before warm
// pool refs answers 204 (or a bare hostToken) whatever was asked.
type Answer struct {
	HostToken string `json:"hostToken,omitempty"`
	// WarmPool has one entry per ref of Heartbeat.WarmPool, keyed by the ref as sent.
	WarmPool map[string]WarmTarget `json:"warmPool,omitempty"`
}

// WarmTarget is what a warm pool ref resolves to: what a create of that ref, by the team
// that owns the template, would ask the agent for. Exactly one of Template and Error is set.
type WarmTarget struct {
	// Template is the name the agent keeps the version under (an API build's is
	// "<templateID>-<buildID>"), Artifact the digest of its manifest in the artifacts store
	// (empty when not uploaded), BuildID the API build (empty for templates built on agents).
	Template string `json:"template,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	BuildID  string `json:"buildID,omitempty"`
	// CPUs and MemoryMiB are the create's shape: a version keeps the size it was built with.
	// DiskMiB is the template's disk size, 0 for the agent's default.
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memoryMiB,omitempty"`
	DiskMiB   int `json:"diskMiB,omitempty"`
	// Error says why the ref resolves to nothing to boot (unknown template or tag, no
	// ready build yet).
	Error string `json:"error,omitempty"`
}

// MaxWarmPoolRefs caps the refs one heartbeat asks about; the control plane resolves no more.
const MaxWarmPoolRefs = 64

// hostIDRE is the accepted host ID form: a hostname label or dotted name.
var hostIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidHostID reports whether id is an accepted host ID.
func ValidHostID(id string) bool { return hostIDRE.MatchString(id) }

// HostIDForm describes ValidHostID's form, for error messages.
const HostIDForm = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"

// Proof is the control plane's answer to a heartbeat's nonce: HMAC-SHA256 under the agent
// token of the host ID and the nonce, in hex.
func Proof(agentToken, hostID, nonce string) string {
	m := hmac.New(sha256.New, []byte(agentToken))
	m.Write([]byte("hearth heartbeat proof\x00" + hostID + "\x00" + nonce))
	return hex.EncodeToString(m.Sum(nil))
}

// HashToken is what the control plane stores of a host token.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// TokenMatches reports, in constant time, whether tok hashes to hash.
func TokenMatches(hash, tok string) bool {
	got := HashToken(tok)
	return tok != "" && subtle.ConstantTimeCompare([]byte(got), []byte(hash)) == 1
}

// BearerMatches reports, in constant time, whether an Authorization header value is
// "Bearer <token>" for a non-empty token.
func BearerMatches(header, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(header), []byte("Bearer "+token)) == 1
}

// NewToken returns a random token (32 bytes, hex).
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Heartbeat is the body of a heartbeat.
type Heartbeat struct {
	RPCAddr            string `json:"rpcAddr"`
	ProxyAddr          string `json:"proxyAddr"`
	Runtime            string `json:"runtime"`
	CPUs               int    `json:"cpus"`
	MemoryTotalMiB     int64  `json:"memoryTotalMiB"`
	MemoryAvailableMiB int64  `json:"memoryAvailableMiB"`
	MemoryCommittedMiB int64  `json:"memoryCommittedMiB"`
	SandboxesRunning   int    `json:"sandboxesRunning"`
	SandboxesPaused    int    `json:"sandboxesPaused"`
	// CPUsCommitted is the sum of running sandboxes' vCPUs; MaxSandboxes the agent's cap on
	// running sandboxes (0: none).
	CPUsCommitted int        `json:"cpusCommitted"`
	MaxSandboxes  int        `json:"maxSandboxes"`
	Templates     []Template `json:"templates"`
	// WarmPool are the agent's warm pool entries that name templates of the control plane
	// rather than ones built on the host: `name[:tag]` or `templateID[:tag]`. The answer
	// resolves each (Answer.WarmPool).
	WarmPool []string `json:"warmPool,omitempty"`
}

// Template is a template built on the agent's host.
type Template struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Artifact is the digest of the manifest of this build in the agent's artifacts store,
	// once uploaded; empty without one.
	Artifact    string `json:"artifact,omitempty"`
	EnvdVersion string `json:"envdVersion"`
	DiskMiB     int    `json:"diskMiB,omitempty"` // the template's disk size; 0: the agent's default
}

// Path is the heartbeat route for a host ID.
func Path(hostID string) string { return "/hearth/v1/hosts/" + url.PathEscape(hostID) + "/heartbeat" }

// Sender posts heartbeats to a control plane.
type Sender struct {
	// ControlPlane is the control plane's base URL (http://127.0.0.1:3000), or several
	// separated by commas, one per replica: a heartbeat goes to the one that answered last
	// and, when that one fails, to the next, so the agent stays registered while any
	// replica is up.
	ControlPlane string
	Token        string // the shared agent token
	HostID       string
	// TokenFile keeps the host's own token (mode 0600) once the control plane issued it.
	TokenFile string
	Interval  time.Duration
	// Build returns the current heartbeat.
	Build func(ctx context.Context) (Heartbeat, error)
	// Answered, when set, is called after each delivered heartbeat with what was sent, when
	// it was built, and the answer (zero for a 204).
	Answered func(hb Heartbeat, builtAt time.Time, ans Answer)
	Log      *slog.Logger
	HTTP     *http.Client

	hostToken string
	current   int // index of the control plane URL that answered last
}

// maxAnswer caps what is read of a heartbeat's answer.
const maxAnswer = 64 << 10

// urls are the control plane URLs ControlPlane names.
func (s *Sender) urls() []string {
	var out []string
	for _, u := range strings.Split(s.ControlPlane, ",") {
		if u = strings.TrimSuffix(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// Send posts one heartbeat: to the control plane URL that answered last, then to the others
// in turn until one takes it.
func (s *Sender) Send(ctx context.Context) error {
	builtAt := time.Now()
	hb, err := s.Build(ctx)
	if err != nil {
		return fmt.Errorf("build heartbeat: %w", err)
	}
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	if s.Token == "" {
		return errors.New("no agent token: start the agent with the control plane's --agent-token")
	}
	if s.hostToken == "" && s.TokenFile != "" {
		if b, err := os.ReadFile(s.TokenFile); err == nil {
			s.hostToken = strings.TrimSpace(string(b))
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host token: %w", err)
		}
	}
	urls := s.urls()
	if len(urls) == 0 {
		return errors.New("no control plane URL: start the agent with --control-plane")
	}
	var errs []error
	for i := range urls {
		n := (s.current + i) % len(urls)
		// A replica that does not answer at all gets its share of the time left, not all of
		// it, so the others are still tried.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := ctx.Deadline(); ok {
			actx, cancel = context.WithTimeout(ctx, time.Until(d)/time.Duration(len(urls)-i))
		}
		ans, err := s.sendTo(actx, urls[n], body)
		cancel()
		if err == nil {
			s.current = n
			if s.Answered != nil {
				s.Answered(hb, builtAt, ans)
			}
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// sendTo posts one heartbeat body to the control plane at base and returns its answer.
func (s *Sender) sendTo(ctx context.Context, base string, body []byte) (Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+Path(s.HostID), bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	nonce := NewToken()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set(NonceHeader, nonce)
	if s.hostToken != "" {
		req.Header.Set(HostTokenHeader, s.hostToken)
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("heartbeat to %s: %w", base, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return Answer{}, fmt.Errorf("heartbeat to %s: %s: %s", base, res.Status, bytes.TrimSpace(msg))
	}
	want := Proof(s.Token, s.HostID, nonce)
	if !hmac.Equal([]byte(res.Header.Get(ProofHeader)), []byte(want)) {
		return Answer{}, fmt.Errorf("heartbeat to %s: the answer does not prove it comes from a control plane holding the agent token: check --control-plane and --agent-token", base)
	}
	var ans Answer
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(io.LimitReader(res.Body, maxAnswer)).Decode(&ans); err != nil {
			return Answer{}, fmt.Errorf("heartbeat to %s: unreadable answer: %w", base, err)
		}
	}
	if ans.HostToken != "" {
		if err := s.saveHostToken(ans.HostToken); err != nil {
			return Answer{}, err
		}
		if s.Log != nil {
			s.Log.Info("registered with the control plane; host token saved", "host", s.HostID, "file", s.TokenFile)
		}
	}
	return ans, nil
}

// saveHostToken keeps the host token for later heartbeats and, when TokenFile is set, on
// disk, durably: losing it in a crash would lock this host ID out of the control plane.
func (s *Sender) saveHostToken(tok string) error {
	s.hostToken = tok
	if s.TokenFile == "" {
		return nil
	}
	if err := durable.WriteFile(s.TokenFile, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("save host token: %w", err)
	}
	return nil
}

// Run sends heartbeats until ctx ends, logging failures (the control plane may restart).
func (s *Sender) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	failing := false
	for {
		sctx, cancel := context.WithTimeout(ctx, interval)
		err := s.Send(sctx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.Log.Warn("heartbeat failed; retrying", "err", err)
			failing = true
		case err == nil && failing:
			s.Log.Info("heartbeat delivered again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
