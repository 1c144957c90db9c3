//go:build !benchproxy

package main

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/cp"
)

// The shipped binary has no benchmark-only shared-transport arm (benchproxy.go).

func benchProxyFlags(*pflag.FlagSet, *serverConfig) {}

func benchSharedProxy(serverConfig, *cp.Server, *slog.Logger) (*http.Server, net.Listener, error) {
	return nil, nil, nil
}

func benchProxyOnRPC(_ bool, rpc, _ http.Handler) http.Handler { return rpc }
