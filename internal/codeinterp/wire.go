package codeinterp

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// This file is the Jupyter messaging protocol (version 5.3) as it travels over ZeroMQ: a
// message is the multipart frames [identities..., "<IDS|MSG>", signature, header,
// parent_header, metadata, content, buffers...], the signature an HMAC-SHA256 in hex of the
// four JSON frames under the key of the kernel's connection file.

const (
	protocolVersion = "5.3"
	delimiter       = "<IDS|MSG>"
)

// header is a Jupyter message header.
type header struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// message is one decoded Jupyter message; Content stays raw so each type decodes its own.
type message struct {
	Header       header
	ParentHeader header
	Content      json.RawMessage
}

// signer signs and verifies messages with a kernel's key.
type signer struct {
	key     []byte
	session string
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	// UUID v4 layout: what kernels and jupyter_client generate, and what E2B's context IDs look like.
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *signer) sign(frames ...[]byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	for _, f := range frames {
		mac.Write(f)
	}
	return []byte(hex.EncodeToString(mac.Sum(nil)))
}

// encode builds the frames of a new request of msgType with content, and returns its msg_id.
func (s *signer) encode(msgType string, content any) ([][]byte, string, error) {
	h := header{
		MsgID:    newID(),
		Session:  s.session,
		Username: "hearth",
		Date:     time.Now().UTC().Format(time.RFC3339Nano),
		MsgType:  msgType,
		Version:  protocolVersion,
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, "", err
	}
	cb, err := json.Marshal(content)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s: %w", msgType, err)
	}
	parent, meta := []byte("{}"), []byte("{}")
	return [][]byte{[]byte(delimiter), s.sign(hb, parent, meta, cb), hb, parent, meta, cb}, h.MsgID, nil
}

var errBadSignature = errors.New("message signature does not match the kernel's key")

// decode parses the frames of a received message, skipping routing identities or a pub/sub
// topic before the delimiter, and checks the signature.
func (s *signer) decode(frames [][]byte) (message, error) {
	i := 0
	for i < len(frames) && !bytes.Equal(frames[i], []byte(delimiter)) {
		i++
	}
	if len(frames)-i < 6 {
		return message{}, fmt.Errorf("malformed message: %d frames, delimiter at %d", len(frames), i)
	}
	f := frames[i+1:]
	if !hmac.Equal(f[0], s.sign(f[1], f[2], f[3], f[4])) {
		return message{}, errBadSignature
	}
	var m message
	if err := json.Unmarshal(f[1], &m.Header); err != nil {
		return message{}, fmt.Errorf("message header: %w", err)
	}
	// A parent header is {} on messages that answer nothing (status starting).
	_ = json.Unmarshal(f[2], &m.ParentHeader)
	m.Content = f[4]
	return m, nil
}
