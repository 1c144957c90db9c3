package netslot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// Reclaim removes everything of this prefix that a previous run left behind
// (namespaces, veths, IFBs, TAPs, the nftables table), however far
// that run got, then enables forwarding and installs a fresh table. It is
// idempotent. It refuses to run while this Pool holds slots, since it would
// destroy them.
func (p *Pool) Reclaim(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reclaimLocked(ctx)
}

func (p *Pool) reclaimLocked(ctx context.Context) error {
	if len(p.slots) > 0 {
		return fmt.Errorf("netslot reclaim: %d slots of this pool are in use", len(p.slots))
	}
	if err := p.removeAll(ctx); err != nil {
		return fmt.Errorf("netslot reclaim: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netslot reclaim: %w", err)
	}
	if err := ensureNetnsDir(); err != nil {
		return fmt.Errorf("netslot reclaim: %w", err)
	}
	if err := setSysctl("net.ipv4.ip_forward", "1"); err != nil {
		return fmt.Errorf("netslot reclaim: %w", err)
	}
	if err := p.table.install(); err != nil {
		return fmt.Errorf("netslot reclaim: %w", err)
	}
	p.indices = newIndexSet(p.cfg.capacity())
	p.ready = true
	return nil
}

// Teardown removes everything of this prefix, the nftables table included,
// for uninstalling an agent or cleaning up after tests. Slots still held
// are destroyed too; the Pool must not be used afterwards.
func (p *Pool) Teardown(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slots = map[int]*Slot{}
	p.ready = false
	if err := p.removeAll(ctx); err != nil {
		return fmt.Errorf("netslot teardown: %w", err)
	}
	if err := p.table.remove(); err != nil {
		return fmt.Errorf("netslot teardown: %w", err)
	}
	return nil
}

// removeAll deletes every slot object carrying the prefix, found by name,
// not by what this process remembers.
func (p *Pool) removeAll(ctx context.Context) error {
	found := map[int]bool{}
	names, err := listNamedNetns()
	if err != nil {
		return err
	}
	for _, n := range names {
		if i, ok := parseIndex(n, p.cfg.Prefix+"-"); ok {
			found[i] = true
		}
	}
	links, err := listLinks(ctx)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		for _, head := range []string{p.cfg.Prefix + "-h", p.cfg.Prefix + "-i"} {
			if i, ok := parseIndex(l.Attrs().Name, head); ok {
				found[i] = true
			}
		}
	}
	var errs []error
	for i := range found {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.teardown(i); err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
		}
	}
	if len(found) > 0 {
		p.log.Info("removed slots found on the host", "count", len(found))
	}
	return errors.Join(errs...)
}

// listLinks lists the host's links, dumping again when the kernel says the dump was
// interrupted: another process (another agent, a test, a container) added or removed a link
// meanwhile, and the partial list could miss one of this pool's slots.
func listLinks(ctx context.Context) ([]netlink.Link, error) {
	for attempt := 0; ; attempt++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt >= 20 {
			return links, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 10 * time.Millisecond):
		}
	}
}
