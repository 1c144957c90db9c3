package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

const hostCols = `id, rpc_addr, proxy_addr, runtime, state, cpus, memory_total_mib,
    memory_available_mib, memory_committed_mib, sandboxes_running, sandboxes_paused,
    registered_at, last_heartbeat, token_hash, draining, cpus_committed, max_sandboxes`

func scanHost(r Row) (store.Host, error) {
	var (
		h                  store.Host
		registered, lastHB int64
	)
	if err := r.Scan(&h.ID, &h.RPCAddr, &h.ProxyAddr, &h.Runtime, &h.State, &h.CPUs,
		&h.MemoryTotalMiB, &h.MemoryAvailableMiB, &h.MemoryCommittedMiB, &h.SandboxesRunning,
		&h.SandboxesPaused, &registered, &lastHB, &h.TokenHash, &h.Draining, &h.CPUsCommitted, &h.MaxSandboxes); err != nil {
		return store.Host{}, err
	}
	h.RegisteredAt, h.LastHeartbeat = fromMillis(registered), fromMillis(lastHB)
	return h, nil
}

// hostUpsert writes a host by ID; an update keeps the first registered_at, the draining
// flag and, unless set here, the token hash.
const hostUpsert = `INSERT INTO hosts (` + hostCols + `)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (id) DO UPDATE SET rpc_addr = excluded.rpc_addr, proxy_addr = excluded.proxy_addr,
    runtime = excluded.runtime, state = excluded.state, cpus = excluded.cpus,
    memory_total_mib = excluded.memory_total_mib,
    memory_available_mib = excluded.memory_available_mib,
    memory_committed_mib = excluded.memory_committed_mib,
    sandboxes_running = excluded.sandboxes_running,
    sandboxes_paused = excluded.sandboxes_paused, last_heartbeat = excluded.last_heartbeat,
    cpus_committed = excluded.cpus_committed, max_sandboxes = excluded.max_sandboxes`

func hostArgs(h store.Host) []any {
	if h.RegisteredAt.IsZero() {
		h.RegisteredAt = now()
	}
	return []any{h.ID, h.RPCAddr, h.ProxyAddr, h.Runtime, h.State, h.CPUs, h.MemoryTotalMiB,
		h.MemoryAvailableMiB, h.MemoryCommittedMiB, h.SandboxesRunning, h.SandboxesPaused,
		millis(h.RegisteredAt), millis(h.LastHeartbeat), h.TokenHash, h.Draining, h.CPUsCommitted, h.MaxSandboxes}
}

// PutHost registers h or updates it. An update keeps the first RegisteredAt and the token
// hash; a zero RegisteredAt becomes now.
func (s *Store) PutHost(ctx context.Context, h store.Host) error {
	if _, err := s.db.Exec(ctx, hostUpsert, hostArgs(h)...); err != nil {
		return fmt.Errorf("put host %s: %w", h.ID, err)
	}
	return nil
}

// ClaimHost writes h with its token hash unless the ID is already held by a token. The
// condition is part of the upsert, so two claims of one ID cannot both succeed.
func (s *Store) ClaimHost(ctx context.Context, h store.Host) error {
	if h.TokenHash == "" {
		return fmt.Errorf("claim host %s: no token hash given", h.ID)
	}
	n, err := s.db.Exec(ctx, hostUpsert+`, token_hash = excluded.token_hash WHERE hosts.token_hash = ''`, hostArgs(h)...)
	if err != nil {
		return fmt.Errorf("claim host %s: %w", h.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("host %s is registered with another token: %w", h.ID, store.ErrConflict)
	}
	return nil
}

// Host reads one host.
func (s *Store) Host(ctx context.Context, id string) (store.Host, error) {
	h, err := scanHost(s.db.QueryRow(ctx, `SELECT `+hostCols+` FROM hosts WHERE id = $1`, id))
	if err != nil {
		if s.d.IsNoRows(err) {
			return store.Host{}, fmt.Errorf("host %s: %w", id, store.ErrNotFound)
		}
		return store.Host{}, fmt.Errorf("host %s: %w", id, err)
	}
	return h, nil
}

// ListHosts returns every host ordered by ID.
func (s *Store) ListHosts(ctx context.Context) ([]store.Host, error) {
	rows, err := s.db.Query(ctx, `SELECT `+hostCols+` FROM hosts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	hs, err := collect(rows, scanHost)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hs, nil
}

// SetHostDraining sets or clears the host's draining flag.
func (s *Store) SetHostDraining(ctx context.Context, id string, draining bool) error {
	n, err := s.db.Exec(ctx, `UPDATE hosts SET draining = $1 WHERE id = $2`, draining, id)
	if err != nil {
		return fmt.Errorf("drain host %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("host %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// MarkHostDown marks a ready host down if it has been silent since silentSince.
func (s *Store) MarkHostDown(ctx context.Context, id string, silentSince time.Time) (bool, error) {
	n, err := s.db.Exec(ctx, `UPDATE hosts SET state = $1 WHERE id = $2 AND state = $3 AND last_heartbeat < $4`,
		store.HostDown, id, store.HostReady, millis(silentSince))
	if err != nil {
		return false, fmt.Errorf("mark host %s down: %w", id, err)
	}
	return n == 1, nil
}

// DeleteHost removes the host's record.
func (s *Store) DeleteHost(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "hosts", "host", id)
}
