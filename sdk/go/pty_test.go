package hearth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func TestPTYInputResizeExit(t *testing.T) {
	sb := sandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out syncBuffer
	h, err := sb.PTY.Create(ctx, hearth.PTYSize{Cols: 80, Rows: 24}, func(b []byte) { out.Write(b) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		do     func() error
		expect string
	}{
		// The arithmetic makes the expected text appear only in the output, not in the echo.
		{name: "input runs in the shell", do: func() error { return h.SendInput(ctx, []byte("echo M$((40+2))\n")) }, expect: "M42"},
		{name: "terminal has the initial size", do: func() error { return h.SendInput(ctx, []byte("echo S$(stty size | tr ' ' x)\n")) }, expect: "S24x80"},
		{name: "resize reaches the terminal", do: func() error {
			if err := h.Resize(ctx, hearth.PTYSize{Cols: 120, Rows: 40}); err != nil {
				return err
			}
			return h.SendInput(ctx, []byte("echo S$(stty size | tr ' ' x)\n"))
		}, expect: "S40x120"},
		{name: "TERM is set", do: func() error { return h.SendInput(ctx, []byte("echo T${TERM}T\n")) }, expect: "Txterm-256colorT"},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		waitFor(t, s.name+" ("+s.expect+")", 10*time.Second, func() bool { return strings.Contains(out.String(), s.expect) })
	}
	if err := h.SendInput(ctx, []byte("exit 7\n")); err != nil {
		t.Fatal(err)
	}
	code, err := h.Wait(ctx)
	if err != nil || code != 7 {
		t.Fatalf("Wait = %d, %v; want the shell's exit code 7", code, err)
	}
}

// TestPTYConnect: a terminal followed again by pid after its first stream ended keeps its
// shell (its variables) and takes input and resizes through the new handle.
func TestPTYConnect(t *testing.T) {
	sb := sandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := sb.PTY.Create(ctx, hearth.PTYSize{Cols: 80, Rows: 24}, func([]byte) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SendInput(ctx, []byte("KEPT=$((20+1))\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	first.Disconnect()
	var out syncBuffer
	h, err := sb.PTY.Connect(ctx, first.PID, func(b []byte) { out.Write(b) })
	if err != nil {
		t.Fatal(err)
	}
	if h.PID != first.PID {
		t.Fatalf("connected to pid %d, want %d", h.PID, first.PID)
	}
	if err := h.Resize(ctx, hearth.PTYSize{Cols: 90, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	if err := h.SendInput(ctx, []byte("echo K${KEPT}K $(stty size)\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shell's variable and new size", 10*time.Second, func() bool { return strings.Contains(out.String(), "K21K 30 90") })
	if _, err := sb.PTY.Connect(ctx, 999999, func([]byte) {}); err == nil {
		t.Error("Connect to a pid that does not exist succeeded")
	}
	_ = h.Kill(ctx)
}
