package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hearthsh/hearth/internal/store"
)

const sandboxCols = `id, template_id, alias, host_id, state, cpus, memory_mib, disk_mib,
    started_at, end_at, metadata, env_vars, envd_version, envd_access_token,
    traffic_access_token, secure, allow_internet, auto_pause, auto_resume, version, updated_at,
    allow_out, deny_out, allow_public_traffic, auto_pause_fs_only, paused_fs_only, team_id,
    snapshot_manifest, build_id`

func scanSandbox(r Row) (store.Sandbox, error) {
	var (
		s                       store.Sandbox
		started, end, updated   int64
		metadataJSON, envVarsJS string
		allowOutJS, denyOutJS   string
	)
	if err := r.Scan(&s.ID, &s.TemplateID, &s.Alias, &s.HostID, &s.State, &s.CPUs, &s.MemoryMiB,
		&s.DiskMiB, &started, &end, &metadataJSON, &envVarsJS, &s.EnvdVersion, &s.EnvdAccessToken,
		&s.TrafficAccessToken, &s.Secure, &s.AllowInternet, &s.AutoPause, &s.AutoResume,
		&s.Version, &updated, &allowOutJS, &denyOutJS, &s.AllowPublicTraffic,
		&s.AutoPauseFilesystemOnly, &s.PausedFilesystemOnly, &s.TeamID, &s.SnapshotManifest, &s.BuildID); err != nil {
		return store.Sandbox{}, err
	}
	s.StartedAt, s.EndAt, s.UpdatedAt = fromMillis(started), fromMillis(end), fromMillis(updated)
	var err error
	if s.Metadata, err = decodeMap(metadataJSON); err != nil {
		return store.Sandbox{}, fmt.Errorf("sandbox %s metadata: %w", s.ID, err)
	}
	if s.EnvVars, err = decodeMap(envVarsJS); err != nil {
		return store.Sandbox{}, fmt.Errorf("sandbox %s env vars: %w", s.ID, err)
	}
	if s.AllowOut, err = decodeList(allowOutJS); err != nil {
		return store.Sandbox{}, fmt.Errorf("sandbox %s allow_out: %w", s.ID, err)
	}
	if s.DenyOut, err = decodeList(denyOutJS); err != nil {
		return store.Sandbox{}, fmt.Errorf("sandbox %s deny_out: %w", s.ID, err)
	}
	return s, nil
}

// sandboxArgs are the values of sandboxCols, in order.
func sandboxArgs(s store.Sandbox) ([]any, error) {
	md, err := encodeMap(s.Metadata)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	env, err := encodeMap(s.EnvVars)
	if err != nil {
		return nil, fmt.Errorf("env vars: %w", err)
	}
	allowOut, err := encodeList(s.AllowOut)
	if err != nil {
		return nil, fmt.Errorf("allow_out: %w", err)
	}
	denyOut, err := encodeList(s.DenyOut)
	if err != nil {
		return nil, fmt.Errorf("deny_out: %w", err)
	}
	return []any{s.ID, s.TemplateID, s.Alias, s.HostID, s.State, s.CPUs, s.MemoryMiB, s.DiskMiB,
		millis(s.StartedAt), millis(s.EndAt), md, env, s.EnvdVersion, s.EnvdAccessToken,
		s.TrafficAccessToken, s.Secure, s.AllowInternet, s.AutoPause, s.AutoResume,
		s.Version, millis(s.UpdatedAt), allowOut, denyOut, s.AllowPublicTraffic,
		s.AutoPauseFilesystemOnly, s.PausedFilesystemOnly, s.TeamID, s.SnapshotManifest, s.BuildID}, nil
}

// CreateSandbox stores s as Version 1, updated now.
func (s *Store) CreateSandbox(ctx context.Context, sb store.Sandbox) error {
	if sb.TeamID == "" {
		return fmt.Errorf("create sandbox %s: %w", sb.ID, store.ErrNoTeam)
	}
	sb.Version, sb.UpdatedAt = 1, now()
	args, err := sandboxArgs(sb)
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", sb.ID, err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO sandboxes (`+sandboxCols+`) VALUES ($1, $2, $3, $4,
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
    $22, $23, $24, $25, $26, $27, $28, $29)`, args...)
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return fmt.Errorf("sandbox %s: %w", sb.ID, store.ErrConflict)
		}
		return fmt.Errorf("create sandbox %s: %w", sb.ID, err)
	}
	return nil
}

// Sandbox reads one sandbox.
func (s *Store) Sandbox(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := scanSandbox(s.db.QueryRow(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = $1`, id))
	if err != nil {
		if s.d.IsNoRows(err) {
			return store.Sandbox{}, fmt.Errorf("sandbox %s: %w", id, store.ErrNotFound)
		}
		return store.Sandbox{}, fmt.Errorf("sandbox %s: %w", id, err)
	}
	return sb, nil
}

// fnError carries the error of UpdateSandbox's fn through Tx so it is returned unwrapped.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// UpdateSandbox reads the row locked (FOR UPDATE, or SQLite's database write lock), applies
// fn and writes every column back. fn cannot change the ID, TeamID, Version or UpdatedAt:
// the store owns them. The version check in the UPDATE cannot fail while the lock holds; it is there
// so that a driver whose locking broke loses no update silently.
func (s *Store) UpdateSandbox(ctx context.Context, id string, fn func(*store.Sandbox) error) (store.Sandbox, error) {
	var out store.Sandbox
	err := s.db.Tx(ctx, func(q Querier) error {
		cur, err := scanSandbox(q.QueryRow(ctx,
			`SELECT `+sandboxCols+` FROM sandboxes WHERE id = $1 `+s.d.ForUpdate, id))
		if err != nil {
			if s.d.IsNoRows(err) {
				return fmt.Errorf("sandbox %s: %w", id, store.ErrNotFound)
			}
			return fmt.Errorf("read sandbox %s: %w", id, err)
		}
		next := cur // the maps are fresh from decoding, so fn may change them freely
		if err := fn(&next); err != nil {
			return fnError{err}
		}
		next.ID, next.TeamID, next.Version, next.UpdatedAt = id, cur.TeamID, cur.Version+1, now()
		args, err := sandboxArgs(next)
		if err != nil {
			return fmt.Errorf("update sandbox %s: %w", id, err)
		}
		n, err := q.Exec(ctx, `UPDATE sandboxes SET template_id = $2, alias = $3, host_id = $4,
    state = $5, cpus = $6, memory_mib = $7, disk_mib = $8, started_at = $9, end_at = $10,
    metadata = $11, env_vars = $12, envd_version = $13, envd_access_token = $14,
    traffic_access_token = $15, secure = $16, allow_internet = $17, auto_pause = $18,
    auto_resume = $19, version = $20, updated_at = $21, allow_out = $22, deny_out = $23,
    allow_public_traffic = $24, auto_pause_fs_only = $25, paused_fs_only = $26,
    snapshot_manifest = $28, build_id = $29
WHERE id = $1 AND team_id = $27 AND version = $30`, append(args, cur.Version)...)
		if err != nil {
			return fmt.Errorf("update sandbox %s: %w", id, err)
		}
		if n != 1 {
			return fmt.Errorf("update sandbox %s: version %d changed under the row lock", id, cur.Version)
		}
		out = next
		return nil
	})
	if fe := (fnError{}); errors.As(err, &fe) {
		return store.Sandbox{}, fe.err
	}
	if err != nil {
		return store.Sandbox{}, err
	}
	return out, nil
}

// DeleteSandbox removes the sandbox's record.
func (s *Store) DeleteSandbox(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "sandboxes", "sandbox", id)
}

// ExpiredSandboxes returns running sandboxes whose deadline is before now, earliest first.
func (s *Store) ExpiredSandboxes(ctx context.Context, now time.Time) ([]store.Sandbox, error) {
	rows, err := s.db.Query(ctx, `SELECT `+sandboxCols+` FROM sandboxes
WHERE state IN ($1, $2) AND end_at < $3 ORDER BY end_at, id`, store.StateRunning, store.StateLost, millis(now))
	if err != nil {
		return nil, fmt.Errorf("expired sandboxes: %w", err)
	}
	sbs, err := collect(rows, scanSandbox)
	if err != nil {
		return nil, fmt.Errorf("expired sandboxes: %w", err)
	}
	return sbs, nil
}
