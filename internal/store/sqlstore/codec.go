package sqlstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// millis stores a time as unix milliseconds; the zero time is stored as 0 so that it reads
// back as the zero time rather than as year 1 in some location.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis is the inverse of millis. Times come back in UTC.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// now is the current time at the precision the store keeps, so that what a method returns
// equals what a later read returns.
func now() time.Time { return time.UnixMilli(time.Now().UnixMilli()).UTC() }

// encodeMap stores a string map as a JSON object; nil is stored as {} so that SQL JSON
// functions always see an object.
func encodeMap(m map[string]string) (string, error) {
	if m == nil {
		m = map[string]string{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep <, > and & readable to the databases' JSON functions
	if err := enc.Encode(m); err != nil {
		return "", fmt.Errorf("encode map: %w", err)
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

// decodeMap reads a JSON object; it never returns nil, so callers can write to the result.
func decodeMap(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode map: %w", err)
	}
	if m == nil { // the document "null"
		m = map[string]string{}
	}
	return m, nil
}

// encodeList stores a string list as a JSON array; nil is stored as [].
func encodeList(l []string) (string, error) {
	if l == nil {
		l = []string{}
	}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode list: %w", err)
	}
	return string(b), nil
}

// decodeList reads a JSON array; an empty array reads as nil.
func decodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decode list: %w", err)
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}
