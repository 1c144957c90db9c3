package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// envelope is one Connect streaming message.
func envelope(flag byte, payload string) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// wsFrame is one WebSocket frame; masked frames carry a zero masking key.
func wsFrame(opcode byte, fin, masked bool, n int) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	var b []byte
	var mask byte
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		b = []byte{b0, mask | byte(n)}
	case n < 1<<16:
		b = []byte{b0, mask | 126, byte(n >> 8), byte(n)}
	default:
		b = []byte{b0, mask | 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	if masked {
		b = append(b, 0, 0, 0, 0)
	}
	return append(b, bytes.Repeat([]byte{'x'}, n)...)
}

func TestFramesBoundaries(t *testing.T) {
	connect := func(msgs ...[]byte) []byte { return bytes.Join(msgs, nil) }
	tests := []struct {
		name   string
		ws     bool
		stream []byte
		// ends are the offsets just past each message.
		ends []int
	}{
		{"connect messages", false, connect(envelope(0, "hello"), envelope(0, ""), envelope(1, strings.Repeat("y", 300))), []int{10, 15, 320}},
		{"websocket short, 16-bit and 64-bit lengths", true, connect(wsFrame(1, true, false, 3), wsFrame(2, true, false, 200), wsFrame(2, true, false, 70000)), []int{5, 209, 209 + 70010}},
		{"websocket masked and fragmented", true, connect(wsFrame(1, false, true, 4), wsFrame(0, true, true, 0), wsFrame(9, true, false, 0)), []int{10, 16, 18}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every split of the stream into two reads gives the same boundaries.
			for split := 0; split <= len(tt.stream); split += 1 + len(tt.stream)/97 {
				f := &frames{ws: tt.ws}
				var got []int
				pos := 0
				for _, part := range [][]byte{tt.stream[:split], tt.stream[split:]} {
					for off := 0; off < len(part); {
						n, ended := f.step(part[off:])
						off += n
						if ended {
							got = append(got, pos+off)
						}
					}
					pos += len(part)
				}
				if !f.atBoundary() {
					t.Fatalf("split %d: not at a boundary at the end of the stream", split)
				}
				if !equalInts(got, tt.ends) {
					t.Fatalf("split %d: boundaries %v, want %v", split, got, tt.ends)
				}
			}
			// lastBoundary of a prefix is the last end inside it.
			for cut := 0; cut <= len(tt.stream); cut += 1 + len(tt.stream)/53 {
				f := &frames{ws: tt.ws}
				want := 0
				for _, e := range tt.ends {
					if e <= cut {
						want = e
					}
				}
				if got := f.lastBoundary(tt.stream[:cut]); got != want {
					t.Fatalf("lastBoundary(%d bytes) = %d, want %d", cut, got, want)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzFrames: however a stream is split into reads, the boundaries found are the same.
func FuzzFrames(f *testing.F) {
	f.Add(envelope(0, "hello"), uint8(3), false)
	f.Add(append(wsFrame(1, true, true, 130), wsFrame(8, true, false, 2)...), uint8(7), true)
	f.Fuzz(func(t *testing.T, stream []byte, split uint8, ws bool) {
		whole := &frames{ws: ws}
		var want []int
		for off := 0; off < len(stream); {
			n, ended := whole.step(stream[off:])
			if n <= 0 {
				t.Fatalf("step made no progress at %d", off)
			}
			off += n
			if ended {
				want = append(want, off)
			}
		}
		parts := &frames{ws: ws}
		var got []int
		chunk := int(split)%17 + 1
		for off := 0; off < len(stream); {
			end := min(off+chunk, len(stream))
			for p := off; p < end; {
				n, ended := parts.step(stream[p:end])
				p += n
				if ended {
					got = append(got, p)
				}
			}
			off = end
		}
		if !equalInts(got, want) || *parts != *whole {
			t.Fatalf("split reads found %v, whole stream %v", got, want)
		}
	})
}

// streamProxy is a proxy whose upstream registers streams; ended receives each stream's end
// function.
func streamProxy(t *testing.T, addr string) (*httptest.Server, chan func(string)) {
	t.Helper()
	ends := make(chan func(string), 4)
	h := New(func(r *http.Request, route Route) (Upstream, error) {
		return Upstream{Addr: addr, OnStream: func(end func(string)) { ends <- end }}, nil
	}, Options{})
	// Every request names sandbox sbx, port 8000, by headers.
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set(HeaderSandboxID, "sbx")
		r.Header.Set(HeaderSandboxPort, "8000")
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s, ends
}

// TestConnectStreamEndsBetweenMessages: a Connect server stream that is ended gets the
// message in flight whole, then an end-of-stream error "unavailable" with the reason, then
// a clean end of the body.
func TestConnectStreamEndsBetweenMessages(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+json")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		w.Write(envelope(0, `{"n":1}`))
		// The second message is in flight: its header and half its body now, the rest later.
		second := envelope(0, `{"n":2,"pad":"abcdefgh"}`)
		w.Write(second[:9])
		fl.Flush()
		<-release
		w.Write(second[9:])
		fl.Flush()
		// A third message is never let through: it begins after the end was asked for.
		time.Sleep(50 * time.Millisecond)
		w.Write(envelope(0, `{"n":3}`))
		fl.Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	ps, ends := streamProxy(t, strings.TrimPrefix(up.URL, "http://"))
	res, err := http.Post(ps.URL+"/process.Process/Start", "application/connect+json", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	end := <-ends
	// Read the first message and the half of the second, then end the stream.
	head := make([]byte, 12+9)
	if _, err := io.ReadFull(res.Body, head); err != nil {
		t.Fatal(err)
	}
	endAt := time.Now()
	end("sandbox x is pausing")
	time.AfterFunc(100*time.Millisecond, func() { close(release) })
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("body after the end: %v (want a clean end)", err)
	}
	if el := time.Since(endAt); el > streamEndWait {
		t.Errorf("ending took %v", el)
	}
	msgs := splitEnvelopes(t, append(head, rest...))
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 2 data + end: %q", len(msgs), msgs)
	}
	if msgs[1].flag != 0 || !strings.Contains(msgs[1].body, `"n":2`) {
		t.Fatalf("message in flight not passed whole: %+v", msgs[1])
	}
	var endMsg struct {
		Error struct{ Code, Message string }
	}
	if msgs[2].flag != 2 || json.Unmarshal([]byte(msgs[2].body), &endMsg) != nil ||
		endMsg.Error.Code != "unavailable" || endMsg.Error.Message != "sandbox x is pausing" {
		t.Fatalf("end of stream = %+v", msgs[2])
	}
}

type env struct {
	flag byte
	body string
}

func splitEnvelopes(t *testing.T, b []byte) []env {
	t.Helper()
	var out []env
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("truncated envelope header: %q", b)
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if len(b) < 5+n {
			t.Fatalf("truncated envelope: %q", b)
		}
		out = append(out, env{b[0], string(b[5 : 5+n])})
		b = b[5+n:]
	}
	return out
}

// TestConnectStreamEndsAtOnceWhenIdle: a stream with nothing in flight (a watcher waiting
// for events) ends as soon as it is asked to, not after a timeout.
func TestConnectStreamEndsAtOnceWhenIdle(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+proto")
		w.WriteHeader(200)
		w.Write(envelope(0, "start"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	ps, ends := streamProxy(t, strings.TrimPrefix(up.URL, "http://"))
	res, err := http.Post(ps.URL+"/filesystem.Filesystem/WatchDir", "application/connect+proto", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	end := <-ends
	first := make([]byte, 10)
	if _, err := io.ReadFull(res.Body, first); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	end("paused")
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > streamEndWait/2 {
		t.Errorf("an idle stream took %v to end", el)
	}
	if msgs := splitEnvelopes(t, rest); len(msgs) != 1 || msgs[0].flag != 2 {
		t.Fatalf("after the end: %+v", msgs)
	}
}

// TestWebSocketEndsWithGoingAway: the client of an ended WebSocket gets a close frame with
// status 1001 and the reason, between two of the server's messages.
func TestWebSocketEndsWithGoingAway(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		for i := 0; ; i++ {
			if err := c.Write(ctx, websocket.MessageText, bytes.Repeat([]byte{'m'}, 1000)); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}))
	defer up.Close()
	ps, ends := streamProxy(t, strings.TrimPrefix(up.URL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ps.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	end := <-ends
	for range 3 {
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	end("sandbox x is pausing")
	var closeErr websocket.CloseError
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			if !errors.As(err, &closeErr) {
				t.Fatalf("read after the end: %v, want a close frame", err)
			}
			break
		}
		if typ != websocket.MessageText || len(msg) != 1000 {
			t.Fatalf("a message was cut: %d bytes", len(msg))
		}
	}
	if closeErr.Code != websocket.StatusGoingAway || closeErr.Reason != "sandbox x is pausing" {
		t.Fatalf("close = %d %q, want 1001 with the reason", closeErr.Code, closeErr.Reason)
	}
}

// TestEventStreamEndsCleanly and plain responses are not streams.
func TestEventStreamEndsAndPlainIsNoStream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/plain" {
			io.WriteString(w, "just a page")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	ps, ends := streamProxy(t, strings.TrimPrefix(up.URL, "http://"))

	res, err := http.Get(ps.URL + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	res.Body.Close()
	select {
	case <-ends:
		t.Fatal("a plain response was registered as a stream")
	default:
	}

	res, err = http.Get(ps.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	end := <-ends
	first := make([]byte, len("data: one\n\n"))
	if _, err := io.ReadFull(res.Body, first); err != nil {
		t.Fatal(err)
	}
	end("pausing")
	rest, err := io.ReadAll(res.Body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %q, %v; want a clean empty end", rest, err)
	}
}

// TestStreamEndRace ends streams while their data flows, for the race detector.
func TestStreamEndRace(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+json")
		for i := 0; i < 2000 && r.Context().Err() == nil; i++ {
			w.Write(envelope(0, `{"data":"`+strings.Repeat("z", i%300)+`"}`))
			w.(http.Flusher).Flush()
		}
	}))
	defer up.Close()
	ps, ends := streamProxy(t, strings.TrimPrefix(up.URL, "http://"))
	var wg sync.WaitGroup
	for i := range 10 {
		res, err := http.Post(ps.URL+"/s", "application/connect+json", nil)
		if err != nil {
			t.Fatal(err)
		}
		end := <-ends
		wg.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond)
			end("bye")
		})
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		msgs := splitEnvelopes(t, body)
		if last := msgs[len(msgs)-1]; last.flag != 2 && len(msgs) != 2000 {
			t.Fatalf("stream %d ended without an end message after %d messages", i, len(msgs))
		}
	}
	wg.Wait()
}
