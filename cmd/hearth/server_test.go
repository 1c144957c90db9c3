package main

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
)

// TestMemoryOvercommitRejected: a negative or non-finite --memory-overcommit is refused
// before anything listens, with a message naming the flag.
func TestMemoryOvercommitRejected(t *testing.T) {
	for _, v := range []float64{-1, math.Inf(1), math.NaN()} {
		c := serverConfig{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0", AgentToken: "t", MemoryOvercommit: v}
		err := runControlPlane(context.Background(), c, nil, slog.New(slog.DiscardHandler), nil)
		if err == nil || !strings.Contains(err.Error(), "--memory-overcommit") {
			t.Errorf("overcommit %g: got %v, want an error naming --memory-overcommit", v, err)
		}
	}
}
