package filesystem

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/hearthsh/hearth/internal/gen/filesystem"
)

// keepaliveHeader is the request header in which the SDKs ask for keepalive events, in
// seconds; they send 50 so proxies with a 60 s idle timeout keep the stream open.
const keepaliveHeader = "Keepalive-Ping-Interval"

// defaultKeepalive is E2B's interval when the header is absent.
const defaultKeepalive = 90 * time.Second

// streamBuffer is how many events may queue between the watcher and a slow client before the
// watcher waits.
const streamBuffer = 256

// WatchDir streams events under a directory: first a start event (the SDK waits for it
// before returning the watch handle), then one event per change, with keepalive events when
// idle. The stream ends when the client goes away or the watched directory is removed.
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[rpc.WatchDirRequest], stream *connect.ServerStream[rpc.WatchDirResponse]) error {
	u, err := s.caller(req)
	if err != nil {
		return err
	}
	root, err := s.resolve(req.Msg.GetPath(), "path", u)
	if err != nil {
		return err
	}
	events := make(chan *rpc.FilesystemEvent, streamBuffer)
	quit := make(chan struct{})
	spec := watchSpec{root: root, recursive: req.Msg.GetRecursive(), includeEntry: req.Msg.GetIncludeEntry(), user: u}
	w, err := startWatch(spec, req.Msg.GetAllowNetworkMounts(), s.logger, func(ev *rpc.FilesystemEvent) bool {
		select {
		case events <- ev:
			return true
		case <-quit:
			return false
		}
	})
	if err != nil {
		return err
	}
	defer func() {
		close(quit)
		w.close()
	}()

	if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Start{Start: &rpc.WatchDirResponse_StartEvent{}}}); err != nil {
		return fmt.Errorf("send start event: %w", err)
	}
	interval := keepaliveInterval(req.Header())
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.done:
			// Deliver what the watcher queued before it stopped.
			for {
				select {
				case ev := <-events:
					if err := sendEvent(stream, ev); err != nil {
						return err
					}
				default:
					return w.err
				}
			}
		case ev := <-events:
			if err := sendEvent(stream, ev); err != nil {
				return err
			}
			ticker.Reset(interval)
		case <-ticker.C:
			if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Keepalive{Keepalive: &rpc.WatchDirResponse_KeepAlive{}}}); err != nil {
				return fmt.Errorf("send keepalive: %w", err)
			}
		}
	}
}

func sendEvent(stream *connect.ServerStream[rpc.WatchDirResponse], ev *rpc.FilesystemEvent) error {
	if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
		return fmt.Errorf("send filesystem event: %w", err)
	}
	return nil
}

// keepaliveInterval reads the client's keepalive interval, falling back to E2B's default for
// a missing, malformed or non-positive value.
func keepaliveInterval(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get(keepaliveHeader)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return defaultKeepalive
}
