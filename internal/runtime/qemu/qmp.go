package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmp is a minimal client for QEMU's machine protocol: one command at a time, asynchronous
// events skipped. The driver dials it per operation; QEMU serves one client at a time.
type qmp struct {
	conn net.Conn
	dec  *json.Decoder
}

// qmpError is an error QEMU returned for a command.
type qmpError struct {
	Cmd   string
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Cmd, e.Class, e.Desc) }

// qmpDefaultTimeout bounds a command when ctx has no deadline.
const qmpDefaultTimeout = 30 * time.Second

// dialQMP connects to the QMP socket at path and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q := &qmp{conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	q.deadline(ctx)
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: no greeting on %s: %v", path, err)
	}
	if err := q.exec(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) deadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(qmpDefaultTimeout)
	}
	_ = q.conn.SetDeadline(dl)
}

func (q *qmp) close() { q.conn.Close() }

// exec runs cmd with args (nil for none) and decodes its return value into out (may be nil).
func (q *qmp) exec(ctx context.Context, cmd string, args, out any) error {
	q.deadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		var msg struct {
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
			Event  string          `json:"event"`
		}
		if err := q.dec.Decode(&msg); err != nil {
			if ctx.Err() != nil {
				err = errors.Join(ctx.Err(), err)
			}
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case msg.Event != "":
			continue
		case msg.Error != nil:
			msg.Error.Cmd = cmd
			return msg.Error
		case msg.Return != nil:
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(msg.Return, out); err != nil {
				return fmt.Errorf("qmp %s: %w", cmd, err)
			}
			return nil
		}
	}
}

// status returns the VM's run state ("running", "paused", "inmigrate", ...).
func (q *qmp) status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := q.exec(ctx, "query-status", nil, &st)
	return st.Status, err
}
