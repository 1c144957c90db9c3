package process

import (
	"os"
	"testing"

	"github.com/hearthsh/hearth/internal/cleanhome"
)

// TestMain runs the tests where root's home is empty: they start login shells on this host
// (see package cleanhome).
func TestMain(m *testing.M) { os.Exit(cleanhome.Main(m.Run)) }
