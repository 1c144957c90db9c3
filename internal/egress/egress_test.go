package egress

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  string // substring; "" = valid
		domain   bool
	}{
		{in: "1.1.1.1", want: "1.1.1.1/32"},
		{in: "8.8.8.0/24", want: "8.8.8.0/24"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: AllTraffic, want: "0.0.0.0/0"},
		{in: "api.openai.com", wantErr: "domain name", domain: true},
		{in: "*.example.com", wantErr: "domain name", domain: true},
		{in: "2001:db8::1", wantErr: "IPv6"},
		{in: "2001:db8::/32", wantErr: "IPv6"},
		{in: "1.2.3.4/33", wantErr: "CIDR"},
		{in: "localhost", wantErr: "not an IPv4 address"},
		{in: "", wantErr: "not an IPv4 address"},
		{in: "1.2.3", wantErr: "not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePrefix(tt.in)
			if tt.wantErr == "" {
				if err != nil || got.String() != tt.want {
					t.Fatalf("ParsePrefix(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePrefix(%q) error %v, want one saying %q", tt.in, err, tt.wantErr)
			}
			if errors.Is(err, ErrDomain) != tt.domain {
				t.Fatalf("ParsePrefix(%q): errors.Is(ErrDomain) = %v", tt.in, !tt.domain)
			}
		})
	}
}

func TestParseListNamesTheEntryAndBoundsTheLength(t *testing.T) {
	if _, err := ParseList([]string{"1.1.1.1", "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("error %v does not name the bad entry", err)
	}
	long := make([]string, MaxEntries+1)
	for i := range long {
		long[i] = "1.1.1.1"
	}
	if _, err := ParseList(long); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("%d entries: error %v", len(long), err)
	}
	if got, err := ParseList(long[:MaxEntries]); err != nil || len(got) != MaxEntries {
		t.Fatalf("%d entries: %d, %v", MaxEntries, len(got), err)
	}
}
