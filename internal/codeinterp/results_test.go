package codeinterp

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestResultLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		main bool
		want string
	}{
		{"quotes around a repr are dropped", `{"text/plain":"'bar'"}`, true, `{"extra":{},"is_main_result":true,"text":"bar","type":"result"}`},
		{"double quotes too", `{"text/plain":"\"bar\""}`, false, `{"extra":{},"is_main_result":false,"text":"bar","type":"result"}`},
		{"inner quotes stay", `{"text/plain":"'a' + 'b'"}`, true, `{"extra":{},"is_main_result":true,"text":"a' + 'b","type":"result"}`},
		{"one quote stays", `{"text/plain":"'"}`, true, `{"extra":{},"is_main_result":true,"text":"'","type":"result"}`},
		{"json stays an object", `{"application/json":{"a":[1]}}`, true, `{"extra":{},"is_main_result":true,"json":{"a":[1]},"type":"result"}`},
		{"unknown MIME types go to extra", `{"application/vnd.plotly.v1+json":{"x":1},"image/png":"iVBO"}`, false, `{"extra":{"application/vnd.plotly.v1+json":{"x":1}},"is_main_result":false,"png":"iVBO","type":"result"}`},
		{"nulls are left out", `{"text/html":null,"text/plain":"1"}`, true, `{"extra":{},"is_main_result":true,"text":"1","type":"result"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var data map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tc.data), &data); err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(resultLine(data, tc.main))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestNormalizeLanguage(t *testing.T) {
	for in, want := range map[string]string{"": "python", " Python ": "python", "BASH": "bash"} {
		if got, err := normalizeLanguage(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"js", "r", "java"} {
		_, err := normalizeLanguage(in)
		if err == nil || !strings.Contains(err.Error(), "runs bash, python") {
			t.Errorf("%q: %v, want an error naming the supported languages", in, err)
		}
	}
	// E2B's template has a JavaScript kernel, so SDK users will ask for it: the error says
	// that this one has none, under the name they used.
	for in, want := range map[string]string{
		"js":         `unsupported language "js": this code interpreter runs bash, python (it has no JavaScript or TypeScript kernel)`,
		"JavaScript": `unsupported language "javascript": this code interpreter runs bash, python (it has no JavaScript or TypeScript kernel)`,
		"ts":         `unsupported language "ts": this code interpreter runs bash, python (it has no JavaScript or TypeScript kernel)`,
		"typescript": `unsupported language "typescript": this code interpreter runs bash, python (it has no JavaScript or TypeScript kernel)`,
		"r":          `unsupported language "r": this code interpreter runs bash, python`,
	} {
		if _, err := normalizeLanguage(in); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %s", in, err, want)
		}
	}
}

func TestSignerRoundTrip(t *testing.T) {
	s := &signer{key: []byte("k"), session: "s"}
	frames, id, err := s.encode("execute_request", map[string]string{"code": "1"})
	if err != nil {
		t.Fatal(err)
	}
	// A message as iopub delivers it: a topic first, and the parent set to our request.
	reply := append([][]byte{[]byte("kernel.x.status")}, frames...)
	m, err := s.decode(reply)
	if err != nil || m.Header.MsgID != id || m.Header.MsgType != "execute_request" {
		t.Fatalf("decode: %+v, %v", m, err)
	}
	reply[len(reply)-1] = []byte(`{"code":"2"}`)
	if _, err := s.decode(reply); err != errBadSignature {
		t.Fatalf("tampered content: %v, want errBadSignature", err)
	}
}
