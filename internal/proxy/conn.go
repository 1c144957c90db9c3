package proxy

import (
	"context"
	"net"
)

type connKey struct{}

// ConnContext is an http.Server ConnContext hook that makes the client connection available
// to handlers, so a pause can close it (see conntrack).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnFrom returns the client connection stored by ConnContext, or nil.
func ConnFrom(ctx context.Context) net.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return c
}
