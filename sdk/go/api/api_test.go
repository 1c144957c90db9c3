package api

import (
	"encoding/json"
	"testing"
)

// The E2B SDKs tell an absent optional field from an empty one (an empty envdAccessToken
// would be sent as the token), so the answers must leave empty ones out.
func TestWireShape(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"sandbox without optionals", Sandbox{TemplateID: "t", SandboxID: "s", ClientID: "c", EnvdVersion: "0.6.4"},
			`{"templateID":"t","sandboxID":"s","clientID":"c","envdVersion":"0.6.4"}`},
		{"sandbox with optionals", Sandbox{TemplateID: "t", SandboxID: "s", Alias: "base", ClientID: "c", EnvdVersion: "0.6.4",
			EnvdAccessToken: "e", TrafficAccessToken: "x", Domain: "d"},
			`{"templateID":"t","sandboxID":"s","alias":"base","clientID":"c","envdVersion":"0.6.4","envdAccessToken":"e","trafficAccessToken":"x","domain":"d"}`},
		{"detail without optionals", SandboxDetail{ListedSandbox: ListedSandbox{SandboxID: "s", State: StatePaused}, Lifecycle: Lifecycle{OnTimeout: "kill"}},
			`{"templateID":"","sandboxID":"s","clientID":"","startedAt":"0001-01-01T00:00:00Z","endAt":"0001-01-01T00:00:00Z","cpuCount":0,"memoryMB":0,"diskSizeMB":0,"state":"paused","envdVersion":"","lifecycle":{"onTimeout":"kill","autoResume":false},"allowInternetAccess":false}`},
		{"build request with name only", TemplateBuildRequestV3{Name: "x"}, `{"name":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("JSON\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}
