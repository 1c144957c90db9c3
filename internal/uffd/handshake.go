package uffd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// maxHandshake bounds the JSON a client may send; Firecracker's is a few hundred bytes.
const maxHandshake = 1 << 20

// handshakeTimeout bounds how long a connected client may take to send its mappings.
const handshakeTimeout = 10 * time.Second

// peer identifies the process on the other end of the socket, so the server can notice
// when it exits and kill it if the server has to give up.
type peer struct {
	pid   int
	pidfd int // -1 when the kernel gave us none
}

// handshake is what a client sends: its regions and its userfaultfd (-1 if it sent none).
type handshake struct {
	regions []Region
	uffd    int
}

// peerOf reads the client's credentials. SO_PEERPIDFD (Linux 6.5) names the process
// without the pid-reuse race of pidfd_open(SO_PEERCRED pid); both are tried.
func peerOf(conn *net.UnixConn) (peer, error) {
	p := peer{pidfd: -1}
	raw, err := conn.SyscallConn()
	if err != nil {
		return p, fmt.Errorf("peer credentials: %w", err)
	}
	var credErr error
	ctlErr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			credErr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.pid = int(cred.Pid)
		if pidfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
			unix.CloseOnExec(pidfd)
			p.pidfd = pidfd
		}
	})
	if err := errors.Join(ctlErr, credErr); err != nil {
		return p, fmt.Errorf("peer credentials: %w", err)
	}
	if p.pidfd < 0 && p.pid > 0 {
		if pidfd, err := unix.PidfdOpen(p.pid, 0); err == nil {
			p.pidfd = pidfd
		}
	}
	return p, nil
}

// readHandshake reads the JSON mappings and the userfaultfd sent with them. Firecracker
// sends both in one sendmsg; on a stream socket the bytes may still arrive in pieces, so it
// reads until the JSON is complete. Any descriptor beyond the first is closed. The returned
// uffd is valid (>= 0) even when the JSON is bad, so the caller knows the client is waiting
// on it.
func readHandshake(conn *net.UnixConn) (handshake, error) {
	hs := handshake{uffd: -1}
	if err := conn.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return hs, fmt.Errorf("handshake deadline: %w", err)
	}
	buf := make([]byte, 0, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for !json.Valid(buf) {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxHandshake {
				return hs, fmt.Errorf("handshake: mappings longer than %d bytes", maxHandshake)
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf[len(buf):cap(buf)], oob)
		buf = buf[:len(buf)+n]
		if oobn > 0 {
			if ferr := takeFDs(oob[:oobn], &hs.uffd); ferr != nil {
				return hs, ferr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return hs, errors.New("handshake: control message truncated (too many descriptors)")
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0 && oobn == 0) {
			break
		}
		if err != nil {
			return hs, fmt.Errorf("handshake: read mappings: %w", err)
		}
	}
	if hs.uffd < 0 {
		return hs, errors.New("handshake: client sent no userfaultfd (SCM_RIGHTS)")
	}
	regions, err := ParseMappings(buf)
	if err != nil {
		return hs, fmt.Errorf("handshake: %w", err)
	}
	hs.regions = regions
	return hs, nil
}

// takeFDs keeps the first descriptor passed with SCM_RIGHTS in *first and closes the rest.
func takeFDs(oob []byte, first *int) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("handshake: parse control message: %w", err)
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue // not SCM_RIGHTS
		}
		for _, fd := range fds {
			if *first < 0 {
				*first = fd
				continue
			}
			_ = unix.Close(fd)
		}
	}
	return nil
}
