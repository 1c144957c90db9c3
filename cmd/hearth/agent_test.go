package main

import (
	"errors"
	"testing"

	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/template"
)

// TestTemplateResolverRejectsBadNames: the agent's template lookup (what Create resolves a
// template name with) refuses names outside the template form before any path join.
func TestTemplateResolverRejectsBadNames(t *testing.T) {
	resolve := templateResolver(t.TempDir())
	for _, name := range []string{"../x", "../../etc", "a/b", ".."} {
		if _, err := resolve(name); !errors.Is(err, template.ErrInvalidName) {
			t.Errorf("resolve %q: %v, want an invalid name error", name, err)
		}
	}
}

// TestWarmPoolFlags: --warm-pool and its shape flags, as typed, either give the pool or an
// error that names the flag and says what to write instead.
func TestWarmPoolFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		runtime string
		want    string // the error's text, "none" for no pool, or "" for a pool of base=2,code-interpreter-v1=1
	}{
		{args: []string{"--warm-pool", "base=2,code-interpreter-v1=1"}},
		{args: []string{"--warm-pool", "base"}, want: `--warm-pool "base": warm pool entry "base": want template=count or template:tag=count, e.g. base=2`},
		{args: []string{"--warm-pool", "base=0"}, want: `--warm-pool "base=0": warm pool entry "base=0": count "0" must be a whole number from 1 to 64`},
		{args: []string{"--warm-pool", "my-tpl:v2:x=1"}, want: `--warm-pool "my-tpl:v2:x=1": warm pool entry "my-tpl:v2:x=1": one :tag at most`},
		{args: []string{"--warm-pool", "base=1", "--warm-pool-cpus", "0"}, want: "--warm-pool-cpus 0: want at least 1"},
		{args: []string{"--warm-pool", "base=1", "--warm-pool-memory-mib", "32"}, want: "--warm-pool-memory-mib 32: want at least 64"},
		{args: []string{"--warm-pool", "base=1"}, runtime: "qemu", want: "--warm-pool: the qemu runtime cannot hand a booted sandbox to a create; only gvisor can"},
		// Without a pool the shape flags size nothing, whatever they say.
		{args: []string{"--warm-pool-cpus", "0"}, want: "none"},
	} {
		c := agentConfig{Runtime: "gvisor"}
		if tc.runtime != "" {
			c.Runtime = tc.runtime
		}
		f := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		c.warmPoolFlags(f)
		if err := f.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		wp, err := c.warmPool()
		if tc.want == "none" {
			if err != nil || len(wp.Sizes) != 0 {
				t.Errorf("%v: %+v, %v; want no pool", tc.args, wp, err)
			}
			continue
		}
		if tc.want != "" {
			if err == nil || err.Error() != tc.want {
				t.Errorf("%v: %v, want error %q", tc.args, err, tc.want)
			}
			continue
		}
		if err != nil || wp.Sizes["base"] != 2 || wp.Sizes["code-interpreter-v1"] != 1 || wp.CPUs != 2 || wp.MemoryMiB != 512 {
			t.Errorf("%v: %+v, %v", tc.args, wp, err)
		}
	}
}
