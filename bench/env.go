package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	hearth "github.com/hearthsh/hearth/sdk/go"
)

// env is what every section shares: the SDK client, the agent's API (for guest addresses),
// the load server binary, and the sandboxes to kill at the end.
type env struct {
	cfg    config
	client *hearth.Client
	agent  hostagentv1connect.HostAgentServiceClient
	// loadServer is the loadserver binary uploaded into sandboxes.
	loadServer []byte

	mu   sync.Mutex
	live map[string]bool
}

func newEnv(cfg config) (*env, error) {
	bin, err := os.ReadFile(cfg.LoadServer)
	if err != nil {
		return nil, fmt.Errorf("read load server binary (built by scripts/bench.sh): %w", err)
	}
	// The agent API speaks HTTP/2 cleartext only for RPC; Connect needs a client that does too.
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: p}}
	return &env{
		cfg:    cfg,
		client: hearth.NewClient(hearth.WithAPIURL(cfg.APIURL), hearth.WithSandboxURL(cfg.ProxyURL), hearth.WithAPIKey(cfg.APIKey)),
		agent: hostagentv1connect.NewHostAgentServiceClient(h2c, "http://"+cfg.AgentAddr,
			connect.WithInterceptors(bearerInterceptor(cfg.AgentToken))),
		loadServer: bin,
		live:       map[string]bool{},
	}, nil
}

// create starts a base sandbox that lives at most lifetime, tracked for cleanup.
func (e *env) create(ctx context.Context, lifetime time.Duration) (*hearth.Sandbox, error) {
	return e.createFrom(ctx, hearth.DefaultTemplate, lifetime)
}

// createFrom starts a sandbox of template that lives at most lifetime, tracked for cleanup.
func (e *env) createFrom(ctx context.Context, template string, lifetime time.Duration) (*hearth.Sandbox, error) {
	sb, err := e.client.Create(ctx, hearth.CreateOptions{Template: template, Timeout: lifetime, Metadata: map[string]string{"purpose": "bench"}})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.live[sb.ID] = true
	e.mu.Unlock()
	return sb, nil
}

// kill destroys a sandbox and forgets it.
func (e *env) kill(ctx context.Context, id string) error {
	kctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := e.client.Kill(kctx, id)
	if err != nil && hearth.IsNotFound(err) {
		err = nil
	}
	if err == nil {
		e.mu.Lock()
		delete(e.live, id)
		e.mu.Unlock()
	}
	return err
}

// killAll destroys every sandbox this run created and still knows of, a few at a time.
func (e *env) killAll(ctx context.Context) error {
	e.mu.Lock()
	ids := make([]string, 0, len(e.live))
	for id := range e.live {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	return forEach(ctx, ids, 8, func(ctx context.Context, _ int, id string) error {
		if err := e.kill(ctx, id); err != nil {
			return fmt.Errorf("kill %s: %w", id, err)
		}
		return nil
	})
}

// guestAddr returns the sandbox's own address as the host reaches it (envd's host).
func (e *env) guestAddr(ctx context.Context, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := e.agent.Get(ctx, connect.NewRequest(&pb.GetRequest{SandboxId: id}))
	if err != nil {
		return "", fmt.Errorf("agent get %s: %w", id, err)
	}
	host, _, err := net.SplitHostPort(res.Msg.GetSandbox().GetEnvdAddress())
	if err != nil {
		return "", fmt.Errorf("agent get %s: envd address %q: %w", id, res.Msg.GetSandbox().GetEnvdAddress(), err)
	}
	return host, nil
}

// forEach runs fn over items with at most par at once and joins the errors.
func forEach[T any](ctx context.Context, items []T, par int, fn func(ctx context.Context, i int, item T) error) error {
	sem := make(chan struct{}, par)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i, it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// newHTTP1Client returns a client for load and throughput requests: HTTP/1.1 only, as
// browsers reach the proxy, with enough idle connections that every worker keeps its own.
func newHTTP1Client(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.MaxIdleConnsPerHost = conns
	t.MaxIdleConns = 4 * conns
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// bearerInterceptor sends the agent token, which the agent API requires.
func bearerInterceptor(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}
