package netslot

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkAcquireRelease measures the cost of one slot's whole life.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []AcquireOption
	}{
		{"veth", nil},
		{"veth+tap", []AcquireOption{WithTAP()}},
		// The largest policy a sandbox may have, and with the inspector's redirect.
		{"veth+egress-256x2", []AcquireOption{WithEgress(benchEgress(false))}},
		{"veth+egress-256x2+inspect", []AcquireOption{WithEgress(benchEgress(true))}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := newTestPool(b, func(c *Config) { c.InspectPort = 40000 })
			ctx := context.Background()
			for b.Loop() {
				s, err := p.Acquire(ctx, "bench", tc.opts...)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Release(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchEgress is a policy of MaxEgressPrefixes disjoint /32s in each list.
func benchEgress(inspect bool) Egress {
	var e Egress
	for i := range MaxEgressPrefixes {
		e.Allow = append(e.Allow, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}), 32))
		e.Deny = append(e.Deny, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 1}), 32))
	}
	e.Inspect = inspect
	return e
}

// transferBytes bounds each throughput iteration: the 100 MB burst plus
// 200 MB that must pass at the sustained rate.
const transferBytes = 300 * 1000 * 1000

// BenchmarkThroughput moves transferBytes over a TCP connection the host
// opens to a server in the slot netns. "sandbox-egress" has the guest send,
// through the shaped path; "sandbox-ingress" has the host send, unshaped,
// for comparison. MB/s is the whole transfer; sustained-MB/s counts only
// what came after the first EgressBurstBytes.
func BenchmarkThroughput(b *testing.B) {
	p := newTestPool(b, nil)
	s := acquire(b, p, "bench")
	ln := listenIn(b, s.NetnsPath, hostPort(s.GuestAddr, guestPort))
	buf := make([]byte, 256*1024)

	for _, tc := range []struct {
		name        string
		guestSends  bool
		wantShaping bool
	}{{"sandbox-egress", true, true}, {"sandbox-ingress", false, false}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(transferBytes)
			var sustained float64
			for b.Loop() {
				// Let the bucket refill between iterations.
				b.StopTimer()
				time.Sleep(EgressBurstBytes * time.Second / EgressRateBytesPerSec)
				b.StartTimer()

				served := make(chan error, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						served <- err
						return
					}
					defer c.Close()
					if tc.guestSends {
						_, err = io.CopyBuffer(c, io.LimitReader(zeros{}, transferBytes), buf)
					} else {
						_, err = io.Copy(io.Discard, c)
					}
					served <- err
				}()
				c, err := net.Dial("tcp4", hostPort(s.GuestAddr, guestPort))
				if err != nil {
					b.Fatal(err)
				}
				var afterBurst time.Time
				if tc.guestSends {
					var n int64
					rbuf := make([]byte, 256*1024)
					for {
						k, err := c.Read(rbuf)
						n += int64(k)
						if afterBurst.IsZero() && n >= EgressBurstBytes {
							afterBurst = time.Now()
						}
						if err == io.EOF {
							break
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					if n != transferBytes {
						b.Fatalf("received %d bytes, want %d", n, transferBytes)
					}
				} else {
					if _, err := io.CopyBuffer(c, io.LimitReader(zeros{}, transferBytes), buf); err != nil {
						b.Fatal(err)
					}
					c.(*net.TCPConn).CloseWrite()
				}
				if err := <-served; err != nil {
					b.Fatal(err)
				}
				c.Close()
				if !afterBurst.IsZero() {
					sustained = float64(transferBytes-EgressBurstBytes) / time.Since(afterBurst).Seconds() / 1e6
				}
			}
			if tc.guestSends {
				b.ReportMetric(sustained, "sustained-MB/s")
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
