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
		{in: "base", wantErr: `entry "base": want template=count or template:tag=count, e.g. base=2`},
		{in: "=2", wantErr: `entry "=2": want template=count`},
		{in: "base=0", wantErr: `count "0" must be a whole number from 1 to 64`},
		{in: "base=two", wantErr: `count "two" must be a whole number from 1 to 64`},
		{in: "base=65", wantErr: `from 1 to 64`},
		{in: "Base=1", wantErr: `template name "Base" must be lower-case letters, digits and dashes`},
		{in: "base=1,base=2", wantErr: `template base is named twice`},
		{in: "base=1,", wantErr: `entry "": want template=count`},
		// Refs of the control plane's templates: a name or template ID with one optional tag.
		{in: "my-tpl=2,code-interpreter-v1:prod=1", want: map[string]int{"my-tpl": 2, "code-interpreter-v1:prod": 1}},
		{in: "my-tpl:v2=1,my-tpl:v3=1,my-tpl=1", want: map[string]int{"my-tpl:v2": 1, "my-tpl:v3": 1, "my-tpl": 1}},
		{in: "my-tpl:1.0_rc-2=1", want: map[string]int{"my-tpl:1.0_rc-2": 1}},
		{in: "my-tpl:default=1", want: map[string]int{"my-tpl:default": 1}},
		{in: "my-tpl:=1", wantErr: `empty tag after "my-tpl:"`},
		{in: ":v2=1", wantErr: `template name "" must be lower-case letters`},
		{in: "my-tpl:v2:x=1", wantErr: `one :tag at most`},
		{in: "my-tpl:V2=1", wantErr: `tag "V2" must be lower-case letters, digits, '-', '_' and '.', and not a UUID`},
		{in: "my-tpl:a/b=1", wantErr: `tag "a/b" must be`},
		{in: "my-tpl:0b7a1c3e-2f4d-4e5a-9b6c-7d8e9f0a1b2c=1", wantErr: `and not a UUID`},
		{in: "my_tpl:v2=1", wantErr: `template name "my_tpl" must be`},
		{in: "my-tpl:v2=1,my-tpl:v2=3", wantErr: `template my-tpl:v2 is named twice`},
		{in: "my-tpl=1,my-tpl:default=1", wantErr: `my-tpl and my-tpl:default are the same (the bare name is tag default)`},
		{in: "my-tpl:v2=0", wantErr: `count "0" must be a whole number`},
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
