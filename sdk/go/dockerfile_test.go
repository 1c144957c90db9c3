package hearth_test

import (
	"reflect"
	"strings"
	"testing"

	hearth "github.com/hearthsh/hearth/sdk/go"
)

func step(typ string, args ...string) hearth.TemplateStep {
	return hearth.TemplateStep{Type: typ, Args: args}
}

// The steps every Dockerfile's build starts and (without USER or WORKDIR) ends with.
var (
	dfHead = []hearth.TemplateStep{step("USER", "root"), step("WORKDIR", "/")}
	dfTail = []hearth.TemplateStep{step("USER", "user"), step("WORKDIR", "/home/user")}
)

func steps(mid ...hearth.TemplateStep) []hearth.TemplateStep {
	return append(append(append([]hearth.TemplateStep{}, dfHead...), mid...), dfTail...)
}

func TestFromDockerfile(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		want       hearth.TemplateBuild
		err        string
	}{
		{name: "from only", dockerfile: "FROM e2bdev/base\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: steps()}},
		{name: "run forms and continuation", dockerfile: "# comment\nFROM python:3 AS app\nRUN apt-get update && \\\n    apt-get install -y curl\nRUN [\"echo\", \"hello world\", \"it's\"]\n",
			want: hearth.TemplateBuild{FromImage: "python:3", Steps: steps(
				step("RUN", "apt-get update &&     apt-get install -y curl"),
				step("RUN", `echo 'hello world' 'it'"'"'s'`))}},
		{name: "copy and add, one step per source, owner and mode", dockerfile: "FROM e2bdev/base\nCOPY a.txt dir/ /app/\nADD --chown=user:user --chmod=755 run.sh /usr/local/bin/run\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: steps(
				step("COPY", "a.txt", "/app/", "", ""), step("COPY", "dir/", "/app/", "", ""),
				step("COPY", "run.sh", "/usr/local/bin/run", "user:user", "0755"))}},
		{name: "env forms and arg", dockerfile: "ARG GLOBAL=1\nFROM e2bdev/base\nENV A=1 B=\"two words\"\nENV LEGACY value with spaces\nARG V=3\nARG NODEFAULT\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: steps(
				step("ENV", "A", "1", "B", "two words"), step("ENV", "LEGACY", "value with spaces"), step("ENV", "V", "3"))}},
		{name: "user and workdir set: no closing steps", dockerfile: "FROM e2bdev/base\nWORKDIR /srv\nUSER nobody\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: append(append([]hearth.TemplateStep{}, dfHead...),
				step("WORKDIR", "/srv"), step("USER", "nobody"))}},
		{name: "cmd becomes the start command", dockerfile: "FROM e2bdev/base\nCMD [\"python3\", \"-m\", \"http.server\", \"8000\"]\nEXPOSE 8000\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: steps(), StartCmd: "python3 -m http.server 8000", ReadyCmd: "sleep 20"}},
		{name: "entrypoint and cmd", dockerfile: "FROM e2bdev/base\nENTRYPOINT [\"/bin/server\"]\nCMD --port 80\nLABEL a=b\nVOLUME /data\n",
			want: hearth.TemplateBuild{FromImage: "e2bdev/base", Steps: steps(), StartCmd: "/bin/server --port 80", ReadyCmd: "sleep 20"}},
		{name: "no from", dockerfile: "RUN true\n", err: "line 1: RUN: comes before FROM"},
		{name: "empty", dockerfile: "# nothing\n", err: "file with no instructions"},
		{name: "two stages", dockerfile: "FROM a\nFROM b\n", err: "line 2: FROM: multi-stage builds are not supported"},
		{name: "healthcheck", dockerfile: "FROM a\nHEALTHCHECK CMD true\n", err: "line 2: HEALTHCHECK: not supported (supported: FROM, RUN"},
		{name: "shell", dockerfile: "FROM a\nSHELL [\"/bin/zsh\", \"-c\"]\n", err: "line 2: SHELL: not supported"},
		{name: "copy from a stage", dockerfile: "FROM a\nCOPY --from=build /x /y\n", err: "line 2: COPY: flag --from=build is not supported (supported: --chown, --chmod)"},
		{name: "run mount", dockerfile: "FROM a\nRUN --mount=type=cache,target=/c true\n", err: "line 2: RUN: flag --mount=type=cache,target=/c is not supported"},
		{name: "add url", dockerfile: "FROM a\nADD https://example.com/x /x\n", err: "sources from URLs"},
		{name: "bad chmod", dockerfile: "FROM a\nCOPY --chmod=u+x a /a\n", err: "--chmod=u+x: want an octal mode"},
		{name: "copy without target", dockerfile: "FROM a\nCOPY a\n", err: "line 2: COPY: want COPY SRC... DEST"},
		{name: "heredoc", dockerfile: "# syntax=docker/dockerfile:1\nFROM a\nRUN <<EOF\necho hi\nEOF\n", err: "heredocs are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hearth.FromDockerfile(tt.dockerfile)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
