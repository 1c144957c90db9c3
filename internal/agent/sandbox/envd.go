package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/envd"
	"github.com/hearthsh/hearth/internal/envd/auth"
	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// envdClient is the agent's own connection to one sandbox's envd, for /init and the guest
// side of pause. It has its own small HTTP/1.1 pool, apart from the proxy's transports, so
// that user traffic cannot delay lifecycle calls.
type envdClient struct {
	base  string
	token string
	http  *http.Client
	proc  processconnect.ProcessClient
}

func newEnvdClient(addr netip.AddrPort, token string) *envdClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     60 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	c := &envdClient{base: "http://" + addr.String(), token: token, http: &http.Client{Transport: tr}}
	c.proc = processconnect.NewProcessClient(c.http, c.base, connect.WithReadMaxBytes(maxEnvdMessage))
	return c
}

func (c *envdClient) close() { c.http.CloseIdleConnections() }

// setHeaders adds the access token and runs RPCs as root.
func (c *envdClient) setHeaders(h http.Header) {
	if c.token != "" {
		h.Set(auth.Header, c.token)
	}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("root:")))
}

// init sends POST /init, retrying until envd answers or ctx ends: right after a boot or a
// restore its listener may need a moment. presentedToken and presentedSecret are the access
// token and the agent secret envd holds now.
func (c *envdClient) init(ctx context.Context, req envd.InitRequest, presentedToken, presentedSecret string) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var last error
	// maybeLanded: an earlier attempt failed in transport after it was sent, so envd may
	// have applied it and hold the new token and secret already; a refusal of the old
	// credentials then is retried once with the new ones (the same /init again is harmless).
	maybeLanded, triedNew := false, false
	for {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/init", bytes.NewReader(body))
		if err != nil {
			return err
		}
		r.Header.Set("Content-Type", "application/json")
		if presentedToken != "" {
			r.Header.Set(auth.Header, presentedToken)
		}
		if presentedSecret != "" {
			r.Header.Set(auth.AgentHeader, presentedSecret)
		}
		res, err := c.http.Do(r)
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
			res.Body.Close()
			if res.StatusCode == http.StatusNoContent {
				return nil
			}
			if res.StatusCode == http.StatusUnauthorized && maybeLanded && !triedNew {
				triedNew = true
				if req.AccessToken != nil {
					presentedToken = *req.AccessToken
				}
				if req.AgentSecret != "" {
					presentedSecret = req.AgentSecret
				}
				continue
			}
			// A 4xx will not get better by retrying.
			return fmt.Errorf("envd /init: %s: %s", res.Status, bytes.TrimSpace(msg))
		}
		if !isDialError(err) {
			maybeLanded = true
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd /init: %w (last error: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// maxEnvdMessage caps one message the agent reads from envd, and maxRunOutput the output run
// keeps: both come from inside the sandbox.
const (
	maxEnvdMessage = 4 << 20
	maxRunOutput   = 64 << 10
)

// run executes a shell command as root in the sandbox and returns its exit code and output
// (the first maxRunOutput bytes; the rest is read and dropped).
func (c *envdClient) run(ctx context.Context, script string) (int32, string, error) {
	off := false
	stream, err := c.proc.Start(ctx, c.streamRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}},
		Stdin:   &off,
	}))
	if err != nil {
		return 0, "", err
	}
	defer stream.Close()
	var out bytes.Buffer
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		for _, b := range [][]byte{ev.GetData().GetStdout(), ev.GetData().GetStderr()} {
			out.Write(b[:min(len(b), max(0, maxRunOutput-out.Len()))])
		}
		if end := ev.GetEnd(); end != nil {
			return end.GetExitCode(), out.String(), nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, out.String(), err
	}
	return 0, out.String(), fmt.Errorf("envd ended the stream without an exit status")
}

func (c *envdClient) streamRequest(m *pb.StartRequest) *connect.Request[pb.StartRequest] {
	req := connect.NewRequest(m)
	c.setHeaders(req.Header())
	return req
}

// isDialError reports whether a request failed before anything was sent: no connection.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
