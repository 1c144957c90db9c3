package runtimetest

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/hearthsh/hearth/internal/netslot"
)

// VMPool is a netslot pool for microVM driver tests: every slot it hands out has the TAP
// (tap0) a VM attaches to, inside a namespace NATing the slot's guest address to the VM.
type VMPool struct {
	*netslot.Pool
}

// NewVMPool returns a reclaimed pool with its own prefix and CIDR (e.g. "hqt",
// 10.240.0.0/16), so tests never touch an agent's slots. Close it when done.
func NewVMPool(ctx context.Context, prefix string, cidr netip.Prefix) (*VMPool, error) {
	p, err := netslot.New(netslot.Config{Prefix: prefix, CIDR: cidr})
	if err != nil {
		return nil, err
	}
	if err := p.Reclaim(ctx); err != nil {
		return nil, fmt.Errorf("reclaim test slots %s: %w", prefix, err)
	}
	return &VMPool{p}, nil
}

// Acquire returns a slot with a TAP for sandbox id.
func (p *VMPool) Acquire(ctx context.Context, id string) (*netslot.Slot, error) {
	return p.Pool.Acquire(ctx, id, netslot.WithTAP())
}

// Close removes every slot and the pool's host rules.
func (p *VMPool) Close(ctx context.Context) error { return p.Teardown(ctx) }
