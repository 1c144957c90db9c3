package main

import "testing"

func TestCheckPprofAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"127.0.0.2:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{":6060", false},
		{"0.0.0.0:6060", false},
		{"10.0.0.1:6060", false},
		{"example.com:6060", false},
		{"127.0.0.1", false},
	} {
		if err := checkPprofAddr(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkPprofAddr(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}
