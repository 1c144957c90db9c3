package envd

import (
	"context"
	"net/http"
	"sort"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/hearthsh/hearth/internal/gen/process"
	"github.com/hearthsh/hearth/internal/gen/process/processconnect"
)

// The benchmarks talk to envd as the JS SDK does: Connect JSON over HTTP/1.1 on loopback.
func benchClient(b *testing.B) processconnect.ProcessClient {
	b.Helper()
	_, hs := newTestServer(b)
	return processconnect.NewProcessClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}, hs.URL, connect.WithProtoJSON())
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	pct := func(p float64) float64 { return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkExecRoundTrip runs `true` and waits for its end event.
func BenchmarkExecRoundTrip(b *testing.B) {
	client := benchClient(b)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		stream, err := client.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}}))
		if err != nil {
			b.Fatal(err)
		}
		for stream.Receive() {
		}
		if err := stream.Err(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkPTYEcho measures keystroke-to-echo: one byte sent with SendInput until the
// terminal echoes it back on the output stream.
func BenchmarkPTYEcho(b *testing.B) {
	client := benchClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Start(ctx, connect.NewRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/cat"},
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
	}))
	if err != nil {
		b.Fatal(err)
	}
	if !stream.Receive() {
		b.Fatal(stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	echoes := make(chan struct{}, 1024)
	go func() {
		for stream.Receive() {
			if n := len(stream.Msg().GetEvent().GetData().GetPty()); n > 0 {
				for range n {
					echoes <- struct{}{}
				}
			}
		}
	}()
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte("x")}},
		})); err != nil {
			b.Fatal(err)
		}
		select {
		case <-echoes:
		case <-time.After(5 * time.Second):
			b.Fatal("no echo within 5 s")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
	client.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: sel, Signal: pb.Signal_SIGNAL_SIGKILL}))
}
