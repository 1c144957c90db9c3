package netslot

import (
	"net/netip"
	"testing"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{}, false},
		{"second agent", Config{Prefix: "agent2", CIDR: netip.MustParsePrefix("10.201.0.0/16")}, false},
		{"unmasked cidr is masked", Config{CIDR: netip.MustParsePrefix("10.200.3.7/24")}, false},
		{"ipv6 pool", Config{CIDR: netip.MustParsePrefix("fd00::/64")}, true},
		{"pool smaller than a /30", Config{CIDR: netip.MustParsePrefix("10.0.0.0/31")}, true},
		{"pool larger than names can number", Config{CIDR: netip.MustParsePrefix("10.0.0.0/15")}, true},
		{"prefix too long for IFNAMSIZ", Config{Prefix: "hearthxyz"}, true},
		{"prefix with a dash", Config{Prefix: "he-arth"}, true},
		{"prefix starting with a digit", Config{Prefix: "1hearth"}, true},
		{"ipv6 deny net", Config{DenyNets: []netip.Prefix{netip.MustParsePrefix("fc00::/7")}}, true},
		{"inspect port", Config{InspectPort: 8443, AllowHostPorts: []uint16{53}}, false},
		{"inspect port also an allowed host port", Config{InspectPort: 8443, AllowHostPorts: []uint16{53, 8443}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("New: err = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestSlotAddressing(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.cfg.capacity(); got != 16384 {
		t.Fatalf("capacity of a /16 = %d, want 16384", got)
	}
	tests := []struct {
		index                       int
		block, host, guest, ns, ifn string
	}{
		{0, "10.200.0.0/30", "10.200.0.1", "10.200.0.2", "hearth-0", "hearth-h0"},
		{1, "10.200.0.4/30", "10.200.0.5", "10.200.0.6", "hearth-1", "hearth-h1"},
		{64, "10.200.1.0/30", "10.200.1.1", "10.200.1.2", "hearth-64", "hearth-h64"},
		{16383, "10.200.255.252/30", "10.200.255.253", "10.200.255.254", "hearth-16383", "hearth-h16383"},
	}
	for _, tc := range tests {
		s := newSlot(p.cfg, tc.index, "sbx")
		if s.Block.String() != tc.block || s.HostAddr.String() != tc.host || s.GuestAddr.String() != tc.guest ||
			s.Netns != tc.ns || s.HostIf != tc.ifn || s.NetnsPath != "/run/netns/"+tc.ns {
			t.Errorf("slot %d = %+v", tc.index, s)
		}
		if len(s.HostIf) > 15 || len(p.cfg.ifbName(tc.index)) > 15 {
			t.Errorf("slot %d: interface name %q longer than IFNAMSIZ-1", tc.index, s.HostIf)
		}
		if s.GuestMAC[0]&1 != 0 || s.GuestMAC[0]&2 == 0 {
			t.Errorf("slot %d: MAC %s is not locally administered unicast", tc.index, s.GuestMAC)
		}
	}
}

// TestParseIndex guards Reclaim against deleting another prefix's objects.
func TestParseIndex(t *testing.T) {
	tests := []struct {
		name, head string
		want       int
		ok         bool
	}{
		{"hearth-h3", "hearth-h", 3, true},
		{"hearth-h16383", "hearth-h", 16383, true},
		{"hearth2-h3", "hearth-h", 0, false},
		{"hearth-hx3", "hearth-h", 0, false},
		{"hearth-h", "hearth-h", 0, false},
		{"hearth-h03", "hearth-h", 0, false},
		{"hearth-h3a", "hearth-h", 0, false},
		{"hearth-12", "hearth-", 12, true},
		{"hearth-h12", "hearth-", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseIndex(tc.name, tc.head)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseIndex(%q, %q) = %d, %v; want %d, %v", tc.name, tc.head, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIndexSetReusesLowest(t *testing.T) {
	s := newIndexSet(3)
	for want := range 3 {
		if got, err := s.take(); err != nil || got != want {
			t.Fatalf("take = %d, %v; want %d", got, err, want)
		}
	}
	if _, err := s.take(); err != ErrExhausted {
		t.Fatalf("take on a full set: %v, want ErrExhausted", err)
	}
	s.put(1)
	s.put(1) // double put must not corrupt the count
	if got, _ := s.take(); got != 1 {
		t.Fatalf("take after put(1) = %d", got)
	}
	if s.inUse() != 3 {
		t.Fatalf("inUse = %d, want 3", s.inUse())
	}
}
