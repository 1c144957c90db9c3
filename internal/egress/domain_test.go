package egress

import (
	"strings"
	"testing"
)

func TestMatchDomain(t *testing.T) {
	patterns := []string{"api.openai.com", "*.github.com", "*.Mixed.Example."}
	tests := []struct {
		host string
		want bool
	}{
		{"api.openai.com", true},
		{"API.OpenAI.com", true},
		{"api.openai.com.", true},
		{"openai.com", false},
		{"x.api.openai.com", false},
		{"api.openai.com.evil.com", false},
		{"github.com", false},
		{"a.github.com", true},
		{"a.b.github.com", true},
		{"A.GitHub.Com.", true},
		{"evilgithub.com", false},
		{"a.evilgithub.com", false},
		{"github.com.evil.com", false},
		{"x.mixed.example", true},
		{"mixed.example", false},
		{"", false},
		{".", false},
		{".github.com", false},
		{"a..github.com", false},
		{"a.github.com..", false},
		{"a\x00.github.com", false},
		{"a b.github.com", false},
		{"*.github.com", false},
		{"-a.github.com", false},
		{"under_score.github.com", true},
		{strings.Repeat("a", 64) + ".github.com", false},
	}
	for _, tt := range tests {
		if got := MatchDomain(patterns, tt.host); got != tt.want {
			t.Errorf("MatchDomain(%q, %q) = %v, want %v", patterns, tt.host, got, tt.want)
		}
	}
	if MatchDomain(nil, "api.openai.com") {
		t.Error("Match with no patterns matched")
	}
	if MatchDomain([]string{"", "*.", "*"}, "a.com") {
		t.Error("degenerate patterns matched a.com")
	}
}

func TestParseDomain(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("d", 61)
	tests := []struct {
		in, want string
		errHas   string // non-empty: an error containing this is expected
	}{
		{in: "api.openai.com", want: "api.openai.com"},
		{in: "API.OpenAI.com.", want: "api.openai.com"},
		{in: "*.github.com", want: "*.github.com"},
		{in: "*.GitHub.COM.", want: "*.github.com"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "a-b.c0", want: "a-b.c0"},
		{in: "1.example.com", want: "1.example.com"},
		{in: name253, want: name253},
		{in: "", errHas: "empty"},
		{in: "*.", errHas: "every host"},
		{in: "*", errHas: "every host"},
		{in: "*..", errHas: "every host"},
		{in: "com", errHas: "two labels"},
		{in: "*.com", errHas: "top-level"},
		{in: "1.2.3.4", errHas: "IP address"},
		{in: "::1", errHas: "IP address"},
		{in: "10.0.0.0/8", errHas: "character"},
		{in: "1.2.3", errHas: "all-digit"},
		{in: "a.123", errHas: "all-digit"},
		{in: "a..com", errHas: "empty label"},
		{in: ".a.com", errHas: "empty label"},
		{in: "-a.com", errHas: "hyphen"},
		{in: "a-.com", errHas: "hyphen"},
		{in: "a.*.com", errHas: "character"},
		{in: "**.a.com", errHas: "character"},
		{in: "*a.com", errHas: "character"},
		{in: "a_b.com", errHas: "character"},
		{in: "https://a.com", errHas: "character"},
		{in: "a.com:443", errHas: "character"},
		{in: "é.com", errHas: "character"},
		{in: " a.com", errHas: "character"},
		{in: label63 + "a.com", errHas: "longer than 63"},
		{in: name253 + "d", errHas: "longer than 253"},
		{in: "*." + name253, errHas: "longer than 253"},
	}
	for _, tt := range tests {
		got, err := ParseDomain(tt.in)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("ParseDomain(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.errHas)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		// A normalised pattern is a fixed point and matches what it names.
		if again, err := ParseDomain(got); err != nil || again != got {
			t.Errorf("ParseDomain(%q) = %q, %v; want it unchanged", got, again, err)
		}
		host := strings.Replace(got, "*", "x", 1)
		if !MatchDomain([]string{got}, host) {
			t.Errorf("pattern %q does not match %q", got, host)
		}
	}
}
