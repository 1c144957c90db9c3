package cp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/hostreg"

	"golang.org/x/net/http2"

	"github.com/hearthsh/hearth/internal/gen/hostagent/v1/hostagentv1connect"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// maxAgentReply caps one hostagent.v1 response the control plane reads from an agent.
const maxAgentReply = 16 << 20

// agentPool holds one RPC client per agent over a single HTTP/2 cleartext transport: RPC
// streams are multiplexed on one connection per agent, apart from proxy traffic. Every call
// carries the agent token, which the agents check.
type agentPool struct {
	http *http.Client
	// h2 is the transport under http, without the token: the benchmark's shared-transport
	// arm sends proxy traffic through it (benchshared.go, benchproxy tag).
	h2  *http2.Transport
	mu  sync.Mutex
	rpc map[string]hostagentv1connect.HostAgentServiceClient // by RPC address
}

func newAgentPool(token string) *agentPool {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     10 * time.Second,
	}
	return &agentPool{http: &http.Client{Transport: bearer{tr, token}}, h2: tr, rpc: map[string]hostagentv1connect.HostAgentServiceClient{}}
}

// bearer adds the agent token to every request.
type bearer struct {
	base  http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func (p *agentPool) client(h store.Host) hostagentv1connect.HostAgentServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.rpc[h.RPCAddr]
	if !ok {
		c = hostagentv1connect.NewHostAgentServiceClient(p.http, "http://"+h.RPCAddr, connect.WithReadMaxBytes(maxAgentReply))
		p.rpc[h.RPCAddr] = c
	}
	return c
}

// errNoCapacity means no ready agent has room.
var errNoCapacity = errors.New("no host agent has room for this sandbox")

// demand is what one sandbox (or build) asks of a host.
type demand struct {
	memMiB, cpus int
}

// load is what is being placed on a host since its last heartbeat, so a burst of creates
// spreads out instead of piling onto the host that looked emptiest.
type load struct {
	memMiB          int64
	cpus, sandboxes int
}

// fits says whether host h has room for d and, if it has, how loaded it would be: the larger
// of its share of committed memory (of its memory times the overcommit factor) and of
// committed vCPUs (of its CPUs; vCPUs are shares, not a limit, so this may pass 1). Without
// room, why says what is full.
func (s *Server) fits(h store.Host, d demand) (score float64, why string) {
	if h.State != store.HostReady || time.Since(h.LastHeartbeat) > s.cfg.HostDeadAfter {
		return 0, "down"
	}
	if h.Draining {
		return 0, "draining"
	}
	if h.MemoryTotalMiB <= 0 {
		return 0, "reports no memory"
	}
	p := s.pending(h)
	if h.MaxSandboxes > 0 && h.SandboxesRunning+p.sandboxes+1 > h.MaxSandboxes {
		return 0, fmt.Sprintf("at its limit of %d running sandboxes", h.MaxSandboxes)
	}
	limit := float64(h.MemoryTotalMiB) * s.cfg.MemoryOvercommit
	mem := float64(max(h.MemoryCommittedMiB+p.memMiB, 0)) + float64(d.memMiB)
	if mem > limit {
		return 0, "out of memory"
	}
	score = mem / limit
	if h.CPUs > 0 {
		score = max(score, float64(max(h.CPUsCommitted+p.cpus, 0)+d.cpus)/float64(h.CPUs))
	}
	return score, ""
}

// place picks the ready, undrained agent with room for d that would be least loaded.
func (s *Server) place(ctx context.Context, d demand) (store.Host, error) {
	hs, err := s.candidates(ctx, d)
	if err != nil {
		return store.Host{}, err
	}
	return hs[0], nil
}

// candidates are the ready, undrained agents with room for d, least loaded first; at least
// one, or an error wrapping errNoCapacity.
func (s *Server) candidates(ctx context.Context, d demand) ([]store.Host, error) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	type cand struct {
		h     store.Host
		score float64
	}
	var cands []cand
	for _, h := range hosts {
		if score, why := s.fits(h, d); why == "" {
			cands = append(cands, cand{h, score})
		}
	}
	if len(cands) == 0 {
		if len(hosts) == 0 {
			return nil, fmt.Errorf("%w: no agent has registered", errNoCapacity)
		}
		return nil, errNoCapacity
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].score != cands[j].score {
			return cands[i].score < cands[j].score
		}
		return cands[i].h.ID < cands[j].h.ID
	})
	out := make([]store.Host, len(cands))
	for i, c := range cands {
		out[i] = c.h
	}
	return out, nil
}

// placement is one sandbox this replica placed on a host, or (release) one it killed or
// paused there, and when.
type placement struct {
	at      time.Time
	d       demand
	release bool
}

// pending is what this replica placed on host h after h's last heartbeat as the store has
// it, whichever replica received that heartbeat: the agent's own figures cover what came
// before. (Clearing them when a heartbeat reached this replica left them growing forever on
// a replica the agents do not send heartbeats to.)
func (s *Server) pending(h store.Host) load {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	var l load
	kept := s.inflight[h.ID][:0]
	for _, p := range s.inflight[h.ID] {
		if !p.at.After(h.LastHeartbeat) {
			continue
		}
		kept = append(kept, p)
		if p.release {
			l.memMiB -= int64(p.d.memMiB)
			l.cpus -= p.d.cpus
			l.sandboxes--
			continue
		}
		l.memMiB += int64(p.d.memMiB)
		l.cpus += p.d.cpus
		l.sandboxes++
	}
	if len(kept) == 0 {
		delete(s.inflight, h.ID)
	} else {
		s.inflight[h.ID] = kept
	}
	return l
}

func (s *Server) addPending(hostID string, d demand) {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	s.inflight[hostID] = append(s.inflight[hostID], placement{at: time.Now(), d: d})
}

// addReleased counts a sandbox its agent has just destroyed or paused as gone from host
// hostID until the host's next heartbeat, which then reports it gone. Without it, a kill at
// full capacity followed at once by a create was refused (503 "no host agent has room") for
// up to a heartbeat interval. A heartbeat the agent composed before the kill but that
// arrives after it ends the release early: that only refuses too much, never admits too much.
func (s *Server) addReleased(hostID string, sb store.Sandbox) {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	d := demand{memMiB: sb.MemoryMiB, cpus: sb.CPUs}
	s.inflight[hostID] = append(s.inflight[hostID], placement{at: time.Now(), d: d, release: true})
}

// heartbeat registers an agent or refreshes it. Every heartbeat needs the shared agent
// token; a host ID's first one is answered with the host's own token, and every later one
// for that ID must carry it: one holding only the shared token, or another host's token, is
// refused and changes nothing.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !hostreg.ValidHostID(id) {
		writeError(w, http.StatusBadRequest, "invalid host ID "+strconv.Quote(id)+": want "+hostreg.HostIDForm)
		return
	}
	if s.cfg.AgentToken == "" {
		writeError(w, http.StatusUnauthorized, "this control plane has no agent token: start it with --agent-token")
		return
	}
	if !hostreg.BearerMatches(r.Header.Get("Authorization"), s.cfg.AgentToken) {
		writeError(w, http.StatusUnauthorized, "agent token required: start the agent with the control plane's --agent-token")
		return
	}
	// Only a holder of the agent token gets a proof, so the proof cannot be asked for by
	// anyone else on behalf of an impostor.
	if n := r.Header.Get(hostreg.NonceHeader); n != "" && len(n) <= 256 {
		w.Header().Set(hostreg.ProofHeader, hostreg.Proof(s.cfg.AgentToken, id, n))
	}
	var hb hostreg.Heartbeat
	if err := decode(r, &hb); err != nil {
		fail(w, err)
		return
	}
	if err := checkAgentAddr("rpcAddr", hb.RPCAddr); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := checkAgentAddr("proxyAddr", hb.ProxyAddr); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := time.Now().UTC()
	h, err := s.store.Host(r.Context(), id)
	isNew := errors.Is(err, store.ErrNotFound)
	if err != nil && !isNew {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if isNew {
		h = store.Host{ID: id, RegisteredAt: now}
	}
	claimed := h.TokenHash != ""
	if claimed && !hostreg.TokenMatches(h.TokenHash, r.Header.Get(hostreg.HostTokenHeader)) {
		s.log.Warn("heartbeat refused: host ID held by another credential", "host", id, "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "host "+id+" is registered with its own token and this heartbeat does not carry it: "+
			"start the agent with the data dir it registered with, or give it another --host-id")
		return
	}
	wasDown := h.State != store.HostReady
	h.RPCAddr, h.ProxyAddr, h.Runtime, h.State = hb.RPCAddr, hb.ProxyAddr, hb.Runtime, store.HostReady
	h.CPUs, h.MemoryTotalMiB, h.MemoryAvailableMiB, h.MemoryCommittedMiB = hb.CPUs, hb.MemoryTotalMiB, hb.MemoryAvailableMiB, hb.MemoryCommittedMiB
	h.SandboxesRunning, h.SandboxesPaused, h.LastHeartbeat = hb.SandboxesRunning, hb.SandboxesPaused, now
	h.CPUsCommitted, h.MaxSandboxes = hb.CPUsCommitted, hb.MaxSandboxes
	var issued string
	if claimed {
		err = s.store.PutHost(r.Context(), h)
	} else {
		issued = hostreg.NewToken()
		h.TokenHash = hostreg.HashToken(issued)
		err = s.store.ClaimHost(r.Context(), h)
	}
	if errors.Is(err, store.ErrConflict) { // another agent registered this ID first
		writeError(w, http.StatusUnauthorized, "host "+id+" was just registered by another agent: give this one another --host-id")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for _, t := range hb.Templates {
		if b := s.registerTemplate(r.Context(), t); b != nil {
			s.dropDeletedCopy(r.Context(), h, *b)
		}
	}
	if wasDown {
		s.log.Info("agent ready", "host", id, "rpc", h.RPCAddr, "proxy", h.ProxyAddr, "runtime", h.Runtime, "registered", issued != "")
	}
	// A host that was up as this heartbeat read it can still have lost sandboxes: another
	// replica may have marked it down, and lost them, between that read and this write.
	if wasDown || s.hasLost(r.Context(), id) {
		go s.reconcileHost(context.WithoutCancel(r.Context()), h)
	}
	// Only agents that ask about warm pool refs get them answered: an older agent takes a 200
	// for a registration, which a body without a host token is not.
	var pool map[string]hostreg.WarmTarget
	if len(hb.WarmPool) > 0 {
		pool = s.resolveWarmPool(r.Context(), hb.WarmPool)
	}
	if issued != "" || pool != nil {
		writeJSON(w, http.StatusOK, hostreg.Answer{HostToken: issued, WarmPool: pool})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// hasLost says whether the store has lost sandboxes on a host.
func (s *Server) hasLost(ctx context.Context, hostID string) bool {
	page, _, err := s.store.ListSandboxes(ctx, store.SandboxFilter{HostID: hostID, States: []string{store.StateLost}, Limit: 1})
	return err == nil && len(page) > 0
}

// checkAgentAddr accepts a host:port an agent advertises.
func checkAgentAddr(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("heartbeat %s %q: want host:port", field, addr)
	}
	return nil
}

// checkHosts marks agents without a recent heartbeat down and their running sandboxes lost.
// The mark is a conditional write: of the replicas that see a host silent, one marks it (and
// loses its sandboxes), and a heartbeat that lands after the list was read keeps it ready
// (writing the listed record back would have undone that heartbeat).
func (s *Server) checkHosts(ctx context.Context) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		s.log.Warn("list hosts", "err", err)
		return
	}
	silentSince := time.Now().Add(-s.cfg.HostDeadAfter)
	for _, h := range hosts {
		if h.State != store.HostReady || !h.LastHeartbeat.Before(silentSince) {
			continue
		}
		marked, err := s.store.MarkHostDown(ctx, h.ID, silentSince)
		if err != nil {
			s.log.Warn("mark host down", "host", h.ID, "err", err)
			continue
		}
		if !marked {
			continue // another replica did, or a heartbeat came
		}
		s.counts.hostsDown.Add(1)
		s.log.Warn("agent stopped sending heartbeats: marked down, its running sandboxes are lost", "host", h.ID, "last", h.LastHeartbeat)
		s.loseHostSandboxes(ctx, h.ID)
	}
}

// loseHostSandboxes marks the running sandboxes of a host that went silent lost. Nothing is
// deleted: the agent may only be cut off, with its sandboxes still running and its paused
// ones' snapshots on its disk, so paused sandboxes stay paused (resumable when it is back)
// and reconcileHost sorts out the lost ones when it returns. A sandbox is never started
// elsewhere in its place, so none can run twice.
func (s *Server) loseHostSandboxes(ctx context.Context, hostID string) {
	for _, id := range s.runningOn(ctx, hostID) {
		_, err := s.store.UpdateSandbox(ctx, id, func(x *store.Sandbox) error {
			if x.State != store.StateRunning || x.HostID != hostID {
				return errNotDue
			}
			x.State = store.StateLost
			return nil
		})
		if err == nil {
			s.events.add(id, "error", "sandbox lost: its host agent "+hostID+" stopped responding")
		}
		s.forgetRoute(id)
	}
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	// Hosts are the operator's: their addresses and loads are not for every tenant.
	if teamOf(r.Context()) != store.DefaultTeam {
		writeError(w, http.StatusForbidden, "hosts are shown to the operator's team (\"default\") only")
		return
	}
	hosts, err := s.store.ListHosts(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]api.HostInfo, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, api.HostInfo{ID: h.ID, State: h.State, Draining: h.Draining, Runtime: h.Runtime, RPCAddr: h.RPCAddr, ProxyAddr: h.ProxyAddr,
			CPUs: h.CPUs, MemoryTotalMiB: h.MemoryTotalMiB, MemoryAvailableMiB: h.MemoryAvailableMiB, MemoryCommittedMiB: h.MemoryCommittedMiB,
			SandboxesRunning: h.SandboxesRunning, SandboxesPaused: h.SandboxesPaused, LastHeartbeat: h.LastHeartbeat})
	}
	writeJSON(w, http.StatusOK, out)
}
