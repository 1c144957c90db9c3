package qemu

import (
	"context"
	"fmt"
	"time"

	"github.com/hearthsh/hearth/internal/runtime/microvm"
)

const balloonPath = "/machine/peripheral/balloon0"

// qmpBalloon drives virtio-balloon-device "balloon0" over QMP for microvm.ReclaimMemory.
type qmpBalloon struct{ q *qmp }

var _ microvm.Balloon = qmpBalloon{}

func (b qmpBalloon) Actual(ctx context.Context) (int64, error) {
	var r struct {
		Actual int64 `json:"actual"`
	}
	err := b.q.exec(ctx, "query-balloon", nil, &r)
	return r.Actual, err
}

func (b qmpBalloon) SetTarget(ctx context.Context, target int64) error {
	return b.q.exec(ctx, "balloon", map[string]any{"value": target}, nil)
}

type guestStats struct {
	Stats      map[string]int64 `json:"stats"`
	LastUpdate int64            `json:"last-update"`
}

// FreeMemory asks the guest for fresh statistics. Stats polling stays off while a VM runs
// (it would wake the guest every interval); turning it on from off makes QEMU request
// statistics at once, so the answer reflects the guest after the manager's drop_caches.
// A new answer shows as a changed last-update (seconds), and the previous one is always
// older than a second: it was given at boot or at an earlier pause.
func (b qmpBalloon) FreeMemory(ctx context.Context) (int64, error) {
	var before guestStats
	if err := b.q.exec(ctx, "qom-get", map[string]any{"path": balloonPath, "property": "guest-stats"}, &before); err != nil {
		return 0, err
	}
	setInterval := func(s int) error {
		return b.q.exec(ctx, "qom-set", map[string]any{"path": balloonPath, "property": "guest-stats-polling-interval", "value": s}, nil)
	}
	if err := setInterval(0); err != nil {
		return 0, err
	}
	if err := setInterval(1); err != nil {
		return 0, err
	}
	defer setInterval(0) //nolint:errcheck // best effort: polling left on only costs wake-ups
	deadline := time.Now().Add(3 * time.Second)
	for {
		var st guestStats
		if err := b.q.exec(ctx, "qom-get", map[string]any{"path": balloonPath, "property": "guest-stats"}, &st); err != nil {
			return 0, err
		}
		if free, ok := st.Stats["stat-free-memory"]; ok && st.LastUpdate != before.LastUpdate && free >= 0 {
			return free, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("guest sent no fresh memory statistics within 3 s (last update %d)", st.LastUpdate)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
