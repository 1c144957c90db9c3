package process

import (
	"testing"
	"time"

	pb "github.com/hearthsh/hearth/internal/gen/process"
)

// A client that stops reading is cut off after the stall limit, and neither the publisher nor
// a client that keeps reading is held up for longer than that or loses events.
func TestHubCutsOffStalledSubscriber(t *testing.T) {
	h := newHub(200 * time.Millisecond)
	stalled, _ := h.subscribe()
	reader, _ := h.subscribe()

	got := make(chan int, 1)
	go func() {
		n := 0
		for range reader.events {
			n++
		}
		got <- n
	}()

	const events = 2000
	start := time.Now()
	for i := 0; i < events; i++ {
		h.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: &pb.ProcessEvent_DataEvent{}}})
	}
	h.finish(&pb.ProcessEvent_EndEvent{})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publisher was blocked for %v by a stalled client", d)
	}
	select {
	case <-stalled.gone:
		if stalled.err != errSlowConsumer {
			t.Fatalf("stalled subscriber closed with %v", stalled.err)
		}
	default:
		t.Fatal("stalled subscriber was not cut off")
	}
	if n := <-got; n != events+1 {
		t.Fatalf("reading subscriber got %d events, want %d", n, events+1)
	}
	// Late subscribers see the end at once.
	if _, end := h.subscribe(); end == nil {
		t.Fatal("subscribe after finish did not return the end event")
	}
}
