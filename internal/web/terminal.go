package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

// WebSocket close codes the page acts on (4000-4999 are the application's).
const (
	// closeNotRunning: the sandbox is paused or changing state; the page retries.
	closeNotRunning websocket.StatusCode = 4001
	// closeStreamEnded: the terminal's stream was cut (a pause does this); the page reconnects.
	closeStreamEnded websocket.StatusCode = 4002
	// closeShellExited: the shell ended; the page offers a new one.
	closeShellExited websocket.StatusCode = 4003
	// closeFailed: the terminal could not be started; the reason says why.
	closeFailed websocket.StatusCode = 4004
)

// terminalStartTimeout bounds starting the shell in the sandbox.
const terminalStartTimeout = 30 * time.Second

// outputQueue bounds terminal output waiting for a slow browser; a browser that falls this
// far behind is disconnected (it reconnects to a fresh shell) rather than stalling envd.
const outputQueue = 1024

// termMessage is a control message from the page (text frames); keystrokes come as binary.
type termMessage struct {
	Type string `json:"type"` // "resize"
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

// terminal bridges a browser WebSocket and a PTY (an interactive login shell) in the sandbox.
func (h *Handler) terminal(w http.ResponseWriter, r *http.Request, key string) {
	id := r.PathValue("id")
	size := hearth.PTYSize{Cols: queryUint(r, "cols", 80), Rows: queryUint(r, "rows", 24)}
	// session has checked Origin already; Accept checks it again against Host.
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	sb, serr := h.sandboxOf(ctx, r.RemoteAddr, key, id)
	if serr != nil {
		conn.Close(closeFailed, truncateReason(serr.msg))
		return
	}
	if sb.State != "running" {
		conn.Close(closeNotRunning, "sandbox is "+sb.State)
		return
	}
	out := make(chan []byte, outputQueue)
	overflow := make(chan struct{})
	var overflowed bool
	onData := func(b []byte) {
		if overflowed {
			return
		}
		select {
		case out <- append([]byte(nil), b...):
		default:
			overflowed = true
			close(overflow)
		}
	}
	// The PTY's output stream lives as long as ctx (the WebSocket's request); a start that
	// takes longer than terminalStartTimeout is given up.
	startTimer := time.AfterFunc(terminalStartTimeout, cancel)
	pty, reattached, err := h.openPTY(ctx, h.envd.sandbox(id, sb.EnvdAccessToken), queryPID(r), size, onData)
	if !startTimer.Stop() && err == nil {
		err = fmt.Errorf("start terminal: no answer within %s", terminalStartTimeout)
	}
	if err != nil {
		h.log.Info("dashboard: start terminal", "sandbox", id, "err", err)
		conn.Close(closeFailed, truncateReason(err.Error()))
		return
	}
	// The browser going away ends its shell; a stream cut under it (a pause) does not: the
	// page reconnects to the same shell by pid once the sandbox runs again.
	keepShell := false
	defer func() {
		if keepShell {
			return
		}
		kctx, kcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = pty.Kill(kctx)
		kcancel()
	}()
	hello, _ := json.Marshal(map[string]any{"type": "pty", "pid": pty.PID, "reattached": reattached})
	if err := conn.Write(ctx, websocket.MessageText, hello); err != nil {
		return
	}

	go func() {
		defer cancel()
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
			switch typ {
			case websocket.MessageBinary:
				err = pty.SendInput(ictx, data)
			case websocket.MessageText:
				var m termMessage
				if json.Unmarshal(data, &m) == nil && m.Type == "resize" && m.Cols > 0 && m.Rows > 0 && m.Cols <= 1000 && m.Rows <= 1000 {
					err = pty.Resize(ictx, hearth.PTYSize{Cols: m.Cols, Rows: m.Rows})
				}
			}
			icancel()
			if err != nil && ctx.Err() == nil {
				h.log.Debug("dashboard: terminal input", "sandbox", id, "err", err)
			}
		}
	}()

	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case b := <-out:
			if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
				return
			}
		case <-overflow:
			keepShell = true
			conn.Close(closeStreamEnded, "browser too slow for the terminal's output")
			return
		case <-pty.Done():
			// Send what arrived before the end.
		drain:
			for {
				select {
				case b := <-out:
					if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
						return
					}
				default:
					break drain
				}
			}
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			code, werr := pty.Wait(wctx)
			wcancel()
			if werr == nil {
				conn.Close(closeShellExited, "shell exited with code "+strconv.Itoa(code))
			} else {
				keepShell = true
				conn.Close(closeStreamEnded, truncateReason("terminal stream ended: "+werr.Error()))
			}
			return
		case <-ping.C:
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// openPTY reattaches to the shell pid when it still runs (reattached true), else starts a
// new one of the given size.
func (h *Handler) openPTY(ctx context.Context, sb *hearth.Sandbox, pid uint32, size hearth.PTYSize, onData func([]byte)) (*hearth.PTYHandle, bool, error) {
	if pid != 0 {
		pty, err := sb.PTY.Connect(ctx, pid, onData)
		if err == nil {
			return pty, true, nil
		}
		if ctx.Err() != nil {
			return nil, false, err
		}
		h.log.Debug("dashboard: reattach terminal, starting a new one", "pid", pid, "err", err)
	}
	pty, err := sb.PTY.Create(ctx, size, onData, nil)
	return pty, false, err
}

// queryPID is the ?pid= of a shell to reattach to, 0 for none.
func queryPID(r *http.Request) uint32 {
	v, err := strconv.ParseUint(r.URL.Query().Get("pid"), 10, 32)
	if err != nil {
		return 0
	}
	return uint32(v)
}

func queryUint(r *http.Request, name string, def uint32) uint32 {
	v, err := strconv.ParseUint(r.URL.Query().Get(name), 10, 32)
	if err != nil || v == 0 || v > 1000 {
		return def
	}
	return uint32(v)
}

// truncateReason fits a WebSocket close reason (at most 123 bytes).
func truncateReason(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}
