package egressproxy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The inspector's port, unless the operator names one, is never one the kernel hands out by
// itself, so the host rule naming it cannot meet another socket's port once the agent is
// down; a taken port is skipped, and a named port is used as it is.
func TestListenAvoidsEphemeralPorts(t *testing.T) {
	lo, hi, err := ephemeralRange(ephemeralRangeFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Listen("hta", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pa := a.Addr().(*net.TCPAddr).Port
	if pa >= lo && pa <= hi {
		t.Fatalf("picked port %d inside the ephemeral range %d-%d", pa, lo, hi)
	}
	// The same key again: its first port is taken, so the next free one.
	b, err := Listen("hta", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if pb := b.Addr().(*net.TCPAddr).Port; pb == pa || (pb >= lo && pb <= hi) {
		t.Fatalf("second listener got port %d (first %d, ephemeral %d-%d)", pb, pa, lo, hi)
	}
	// A named port is taken as named, and its conflict is an error, not another port.
	if _, err := Listen("hta", pa); err == nil {
		t.Fatalf("listening on the taken port %d succeeded", pa)
	}
}

func TestEphemeralRange(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content    string
		lo, hi     int
		wantErr    bool
		firstAbove bool
	}{
		{"32768\t60999\n", 32768, 60999, false, true},
		{"1024 65535\n", 0, 0, true, false}, // nothing left outside
		{"40000 65535\n", 40000, 65535, false, false},
		{"60999 32768\n", 0, 0, true, false},
		{"many\n", 0, 0, true, false},
	} {
		p := filepath.Join(dir, "range")
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		lo, hi, err := ephemeralRange(p)
		if (err != nil) != tc.wantErr || (err == nil && (lo != tc.lo || hi != tc.hi)) {
			t.Errorf("%q: %d-%d, %v; want %d-%d, error %v", tc.content, lo, hi, err, tc.lo, tc.hi, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		ports := portsOutside(lo, hi)
		if slices.ContainsFunc(ports, func(p int) bool { return p >= lo && p <= hi || p < 1024 }) {
			t.Errorf("%q: candidates include ephemeral or privileged ports", tc.content)
		}
		if above := ports[0] > hi; above != tc.firstAbove {
			t.Errorf("%q: first candidate %d, want above the range: %v", tc.content, ports[0], tc.firstAbove)
		}
	}
}
