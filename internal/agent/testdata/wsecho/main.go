// Command wsecho is a test server run inside sandboxes by the agent's integration tests:
// GET / answers "hello from <addr>", /ws echoes WebSocket messages, /hold streams a byte
// every 100 ms until the client goes away.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:8080", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s", *addr) })
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if _, err := w.Write([]byte(".")); err != nil {
				return
			}
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}
