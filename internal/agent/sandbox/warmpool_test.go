package sandbox

import (
	"maps"
	"strings"
	"testing"
)

func TestParseWarmPool(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]int
		wantErr string
	}{
		{in: "", want: map[string]int{}},
		{in: "base=2", want: map[string]int{"base": 2}},
		{in: "base=2, code-interpreter-v1=1", want: map[string]int{"base": 2, "code-interpreter-v1": 1}},
		{in: "base", wantErr: `entry "base": want template=count, e.g. base=2`},
		{in: "=2", wantErr: `entry "=2": want template=count`},
		{in: "base=0", wantErr: `count "0" must be a whole number from 1 to 64`},
		{in: "base=two", wantErr: `count "two" must be a whole number from 1 to 64`},
		{in: "base=65", wantErr: `from 1 to 64`},
		{in: "Base=1", wantErr: `template name "Base" must be lower-case letters, digits and dashes`},
		{in: "base=1,base=2", wantErr: `template base is named twice`},
		{in: "base=1,", wantErr: `entry "": want template=count`},
	} {
		got, err := ParseWarmPool(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseWarmPool(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("ParseWarmPool(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
