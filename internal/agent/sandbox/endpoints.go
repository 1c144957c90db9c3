package sandbox

import (
	"net/netip"

	"github.com/hearthsh/hearth/internal/runtime"
)

// EnvdEndpoint is how the agent itself reaches a sandbox's envd (for the metrics log).
type EnvdEndpoint struct {
	ID      string
	Running bool
	// Target and AccessToken are set only while Running.
	Target      Target
	AccessToken string
}

// EnvdEndpoints lists every sandbox on this agent, with where its envd is while it runs.
func (m *Manager) EnvdEndpoints() []EnvdEndpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]EnvdEndpoint, 0, len(m.sandboxes))
	for id, rec := range m.sandboxes {
		e := EnvdEndpoint{ID: id}
		if rec.State == Running && rec.slot != nil {
			e.Running, e.AccessToken = true, rec.AccessToken
			e.Target = Target{Addr: netip.AddrPortFrom(rec.slot.GuestAddr, runtime.EnvdPort)}
			if sd, ok := m.cfg.Driver.(runtime.EnvdSocketDriver); ok {
				e.Target.Socket = sd.EnvdSocket(m.spec(rec, id))
			}
		}
		out = append(out, e)
	}
	return out
}
