package hearth_test

import (
	"testing"

	"github.com/hearthsh/hearth/sdk/go/hearthtest"
)

// startOwnEnvd runs an envd for one test that changes envd's state (e.g. its access token).
func startOwnEnvd(t *testing.T) (*hearthtest.Envd, error) {
	e, err := hearthtest.StartEnvd(envdPath)
	if err != nil {
		return nil, err
	}
	t.Cleanup(e.Stop)
	return e, nil
}
