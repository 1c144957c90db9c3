package agent

import (
	"fmt"

	"github.com/hearthsh/hearth/internal/egress"
	pb "github.com/hearthsh/hearth/internal/gen/hostagent/v1"
	"github.com/hearthsh/hearth/internal/netslot"
)

// egressFromProto reads the RPC's policy. The control plane checked the user's input
// already; this is the agent's own contract.
func egressFromProto(e *pb.Egress) (netslot.Egress, []string, error) {
	allow, err := egress.ParseList(e.GetAllow())
	if err != nil {
		return netslot.Egress{}, nil, fmt.Errorf("egress allow: %w", err)
	}
	deny, err := egress.ParseList(e.GetDeny())
	if err != nil {
		return netslot.Egress{}, nil, fmt.Errorf("egress deny: %w", err)
	}
	if len(e.GetAllowDomains()) > egress.MaxEntries {
		return netslot.Egress{}, nil, fmt.Errorf("egress allow domains: %d entries, at most %d", len(e.GetAllowDomains()), egress.MaxEntries)
	}
	var domains []string
	for _, d := range e.GetAllowDomains() {
		n, err := egress.ParseDomain(d)
		if err != nil {
			return netslot.Egress{}, nil, fmt.Errorf("egress allow domains: %w", err)
		}
		domains = append(domains, n)
	}
	return netslot.Egress{Allow: allow, Deny: deny}, domains, nil
}

func egressToProto(e netslot.Egress, domains []string) *pb.Egress {
	if len(e.Allow) == 0 && len(e.Deny) == 0 && len(domains) == 0 {
		return nil
	}
	out := &pb.Egress{AllowDomains: domains}
	for _, p := range e.Allow {
		out.Allow = append(out.Allow, p.String())
	}
	for _, p := range e.Deny {
		out.Deny = append(out.Deny, p.String())
	}
	return out
}
