package main

import (
	"context"
	"fmt"
	"time"
)

const execDefinition = "round trip of Commands.Run(\"true\") in a running sandbox (bash -l -c true: start " +
	"stream, process start, exit, end event), through the public proxy, one after another."

func runExec(ctx context.Context, t *target, n int, s *Section) error {
	var d samples
	for i := range n + 5 {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		_, err := t.sb.Commands.Run(cctx, "true", nil)
		el := time.Since(start)
		cancel()
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		if i >= 5 { // the first few warm up connections
			d = append(d, el)
		}
	}
	s.add(fmt.Sprintf("p50 (n=%d)", n), d.pct(50), "ms")
	s.add(fmt.Sprintf("p99 (n=%d)", n), d.pct(99), "ms")
	return nil
}
