package cp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/hearthsh/hearth/internal/egress"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/store"
	"github.com/hearthsh/hearth/sdk/go/api"
)

// checkOutbound validates a user's allowOut and denyOut, returning them normalised
// (addresses as /32 ranges, host bits cleared, domains in lower case) as the store keeps
// them. Domain names are allowed in allowOut only, as in E2B.
func checkOutbound(allowOut, denyOut []string) (allow, deny []string, err error) {
	if allow, err = normaliseList("allowOut", allowOut, true); err != nil {
		return nil, nil, err
	}
	if deny, err = normaliseList("denyOut", denyOut, false); err != nil {
		return nil, nil, err
	}
	return allow, deny, nil
}

func normaliseList(field string, in []string, domains bool) ([]string, error) {
	if len(in) > egress.MaxEntries {
		return nil, errorf(http.StatusBadRequest, "network.%s: %d entries, at most %d are allowed", field, len(in), egress.MaxEntries)
	}
	var out []string
	for _, s := range in {
		p, err := egress.ParsePrefix(s)
		if err == nil {
			out = append(out, p.String())
			continue
		}
		if !errors.Is(err, egress.ErrDomain) && !strings.Contains(s, "*") {
			return nil, errorf(http.StatusBadRequest, "network.%s: %q %v", field, s, err)
		}
		if !domains {
			return nil, errorf(http.StatusBadRequest, "network.%s: %q is a domain name: domain names are allowed in allowOut only; deny by address or CIDR range (0.0.0.0/0 for all)", field, s)
		}
		d, err := egress.ParseDomain(s)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "network.%s: %v", field, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// unsupported refuses E2B options Hearth does not implement, naming the first one set.
func unsupported(fields map[string]bool) error {
	var set []string
	for name, isSet := range fields {
		if isSet {
			set = append(set, name)
		}
	}
	if len(set) == 0 {
		return nil
	}
	slices.Sort(set)
	return errorf(http.StatusBadRequest, "%s: not supported by Hearth; leave it out", set[0])
}

// given reports whether a raw JSON field holds anything but null or an empty value.
func given(raw json.RawMessage) bool {
	switch string(raw) {
	case "", "null", "{}", "[]", `""`:
		return false
	}
	return true
}

// sandboxNetwork is a new sandbox's checked network settings, as the store keeps them.
type sandboxNetwork struct {
	AllowOut, DenyOut  []string
	AllowPublicTraffic bool
}

// checkNetwork validates a new sandbox's network options (and refuses the E2B options
// Hearth does not implement).
func checkNetwork(req api.NewSandbox) (sandboxNetwork, error) {
	out := sandboxNetwork{AllowPublicTraffic: true}
	n := req.Network
	if err := unsupported(map[string]bool{
		"volumeMounts": given(req.VolumeMounts), "mcp": given(req.MCP), "iam": given(req.IAM),
	}); err != nil {
		return out, err
	}
	if n == nil {
		return out, nil
	}
	if err := unsupported(map[string]bool{
		"network.egressProxy": given(n.EgressProxy), "network.rules": given(n.Rules),
		"network.maskRequestHost": n.MaskRequestHost != nil && *n.MaskRequestHost != "",
		"network.httpsPorts":      given(n.HTTPSPorts),
	}); err != nil {
		return out, err
	}
	var err error
	if out.AllowOut, out.DenyOut, err = checkOutbound(n.AllowOut, n.DenyOut); err != nil {
		return out, err
	}
	if n.AllowPublicTraffic != nil {
		out.AllowPublicTraffic = *n.AllowPublicTraffic
	}
	return out, nil
}

// dnsServer is the template's first name server. A policy that allows domains also allows
// it, as E2B allows its default name server, or no allowed name could be resolved.
const dnsServer = "8.8.8.8/32"

// egressOf is the policy the agent enforces: E2B's allow_internet_access false is a deny
// of all traffic, with allowOut still winning.
func egressOf(sb store.Sandbox) *pb.Egress {
	deny := slices.Clone(sb.DenyOut)
	if !sb.AllowInternet && !slices.Contains(deny, egress.AllTraffic) {
		deny = append(deny, egress.AllTraffic)
	}
	var allow, domains []string
	for _, a := range sb.AllowOut {
		if _, err := egress.ParsePrefix(a); err == nil {
			allow = append(allow, a)
		} else {
			domains = append(domains, a)
		}
	}
	if len(domains) > 0 && !slices.Contains(allow, dnsServer) {
		allow = append(allow, dnsServer)
	}
	if len(deny) == 0 && len(allow) == 0 && len(domains) == 0 {
		return nil
	}
	return &pb.Egress{Allow: allow, Deny: deny, AllowDomains: domains}
}

// networkOf is the network part of GET /sandboxes/{id}.
func networkOf(sb store.Sandbox) *api.SandboxNetwork {
	public := sb.AllowPublicTraffic
	return &api.SandboxNetwork{AllowOut: sb.AllowOut, DenyOut: sb.DenyOut, AllowPublicTraffic: &public}
}

// updateNetwork is PUT /sandboxes/{id}/network: it replaces the outbound policy of a
// running sandbox at once, connections already open included, and of a paused one for
// when it resumes.
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req api.NetworkUpdate
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if err := unsupported(map[string]bool{"egressProxy": given(req.EgressProxy), "rules": given(req.Rules)}); err != nil {
		fail(w, err)
		return
	}
	allow, deny, err := checkOutbound(req.AllowOut, req.DenyOut)
	if err != nil {
		fail(w, err)
		return
	}
	sb, err := s.store.Sandbox(r.Context(), id)
	if err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	if sb.State != store.StateRunning && sb.State != store.StatePaused {
		fail(w, busy(id, sb.State, "change the network of"))
		return
	}
	next := sb
	next.AllowOut, next.DenyOut = allow, deny
	next.AllowInternet = req.AllowInternetAccess == nil || *req.AllowInternetAccess
	host, err := s.store.Host(r.Context(), sb.HostID)
	if err != nil {
		fail(w, fmt.Errorf("host of sandbox %s: %w", id, err))
		return
	}
	// The agent first: it enforces the policy, and refuses while a pause or resume runs.
	// The store then records what is in force.
	if _, err := s.agents.client(host).SetEgress(r.Context(), connect.NewRequest(&pb.SetEgressRequest{
		SandboxId: id, Egress: egressOf(next),
	})); err != nil {
		fail(w, fmt.Errorf("set network of sandbox %s: %w", id, err))
		return
	}
	if _, err := s.store.UpdateSandbox(r.Context(), id, func(x *store.Sandbox) error {
		x.AllowOut, x.DenyOut, x.AllowInternet = next.AllowOut, next.DenyOut, next.AllowInternet
		return nil
	}); err != nil {
		fail(w, sandboxErr(id, err))
		return
	}
	s.events.add(id, "info", fmt.Sprintf("network updated: allowOut %v, denyOut %v, internet %v", allow, deny, next.AllowInternet))
	w.WriteHeader(http.StatusNoContent)
}
