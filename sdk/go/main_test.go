package hearth_test

import (
	"fmt"
	"os"
	"testing"

	hearth "github.com/hearthsh/hearth/sdk/go"
	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

// envd is a real envd shared by the tests of the envd half of the client, and envdPath the
// binary, for tests that need an envd of their own.
var (
	envd     *hearthtest.Envd
	envdPath string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hearth-sdk-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	envdPath, err = hearthtest.BuildEnvd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	envd, err = hearthtest.StartEnvd(envdPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer envd.Stop()
	return m.Run()
}

// sandbox returns a handle to the shared envd, as a sandbox reached through a proxy would be.
func sandbox(t *testing.T) *hearth.Sandbox {
	t.Helper()
	c := hearth.NewClient(hearth.WithSandboxURL(envd.URL), hearth.WithAPIURL("http://127.0.0.1:1"))
	return c.Attach("sbxtest0000000000000", "")
}
