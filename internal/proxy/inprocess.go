package proxy

import (
	"net/http"
	"sync/atomic"
)

// InProcess holds the proxy handler of an agent running in the same process as the control
// plane (hearth dev). The control plane's proxy hands requests for that agent's sandboxes to
// it (Upstream.Next, handoff.go) instead of writing them to the agent's socket: that hop then
// costs no HTTP serialization, no socket, no second proxy pass and no second copy of every
// body byte. The handler is the agent's whole proxy, its token check included, so every
// check the agent makes on traffic from a remote control plane it makes here too.
type InProcess struct {
	h atomic.Pointer[http.Handler]
}

// NewInProcess returns an InProcess with no handler yet: Handler is nil until Set.
func NewInProcess() *InProcess { return &InProcess{} }

// Set installs the handler requests go to (once the agent has started).
func (p *InProcess) Set(h http.Handler) { p.h.Store(&h) }

// Handler is the installed handler, or nil before Set.
func (p *InProcess) Handler() http.Handler {
	if hp := p.h.Load(); hp != nil {
		return *hp
	}
	return nil
}

// inProcessRemoteAddr is the RemoteAddr of requests handed to an in-process handler. Like
// that of a Unix socket's peer it is no host:port, so the handler sees what it would over
// the agent's socket.
const inProcessRemoteAddr = "@in-process"
