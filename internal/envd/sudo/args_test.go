package sudo

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args []string
		act  action
		req  request
		err  string
	}{
		{args: []string{"whoami"}, req: request{Args: []string{"whoami"}}},
		{args: []string{"-u", "user", "id"}, req: request{User: "user", Args: []string{"id"}}},
		{args: []string{"-uuser", "id"}, req: request{User: "user", Args: []string{"id"}}},
		{args: []string{"--user=user", "id"}, req: request{User: "user", Args: []string{"id"}}},
		{args: []string{"--user", "user", "id"}, req: request{User: "user", Args: []string{"id"}}},
		{args: []string{"-nE", "env"}, req: request{PreserveEnv: true, Args: []string{"env"}}},
		{args: []string{"-E", "-H", "-n", "env"}, req: request{PreserveEnv: true, SetHome: true, Args: []string{"env"}}},
		{args: []string{"--preserve-env=A,B", "env"}, req: request{PreserveList: []string{"A", "B"}, Args: []string{"env"}}},
		{args: []string{"--", "-weird", "x"}, req: request{Args: []string{"-weird", "x"}}},
		// Options end at the command: its own options are its own.
		{args: []string{"ls", "-l", "-u"}, req: request{Args: []string{"ls", "-l", "-u"}}},
		{args: []string{"A=1", "B_2=x=y", "env", "C=3"}, req: request{SetVars: []string{"A=1", "B_2=x=y"}, Args: []string{"env", "C=3"}}},
		{args: []string{"-i"}, req: request{Login: true}},
		{args: []string{"-s", "echo", "hi"}, req: request{Shell: true, Args: []string{"echo", "hi"}}},
		{args: []string{"-D", "/tmp", "pwd"}, req: request{Chdir: "/tmp", Args: []string{"pwd"}}},
		{args: []string{"-p", "", "-S", "true"}, req: request{Args: []string{"true"}}},
		{args: []string{"-v"}, act: actCheck},
		{args: []string{"-l"}, act: actList},
		{args: []string{"-k"}, act: actNothing},
		{args: []string{"-k", "true"}, req: request{Args: []string{"true"}}},
		{args: []string{"-h"}, act: actHelp},
		{args: []string{"-V"}, act: actVersion},
		{args: []string{}, err: "no command given"},
		{args: []string{"-E"}, err: "no command given"},
		{args: []string{"-u"}, err: "requires an argument -- 'u'"},
		{args: []string{"-x", "true"}, err: "invalid option -- 'x'"},
		{args: []string{"--bogus", "true"}, err: "unrecognized option '--bogus'"},
		{args: []string{"-i", "-s"}, err: "both the -i and -s"},
		{args: []string{"-g", "adm", "true"}, err: "-g is not supported"},
	}
	for _, tc := range cases {
		inv, err := parseArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseArgs(%q): error %v, want one with %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseArgs(%q): %v", tc.args, err)
			continue
		}
		if inv.act != tc.act {
			t.Errorf("parseArgs(%q): action %d, want %d", tc.args, inv.act, tc.act)
		}
		if tc.act == actRun && !reflect.DeepEqual(inv.req, tc.req) {
			t.Errorf("parseArgs(%q):\n got %+v\nwant %+v", tc.args, inv.req, tc.req)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"echo", "$HOME", "a b", "it's"})
	if want := `echo $HOME a\ b it\'s`; got != want {
		t.Fatalf("shellJoin = %q, want %q", got, want)
	}
}
