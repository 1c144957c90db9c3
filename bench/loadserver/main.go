// Command loadserver is the static server `make bench` uploads into a sandbox to stand in for
// a notebook server: /ws echoes WebSocket messages (kernel channels), /api answers a small
// JSON document (status polling), and /blob?bytes=N streams N bytes as fast as the network
// takes them (downloads). It has no dependencies inside the sandbox (CGO_ENABLED=0).
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// maxBlob bounds one /blob response, so a typo cannot stream forever.
const maxBlob = 4 << 30

func main() {
	addr := flag.String("addr", "0.0.0.0:8080", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", echo)
	mux.HandleFunc("/api", api)
	mux.HandleFunc("/blob", blob)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// echo sends every message back unchanged, until the client goes away.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
	}
}

// api answers what a notebook's status endpoint might: a few hundred bytes of JSON.
func api(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status":      "idle",
		"kernels":     []string{"python3"},
		"last_active": time.Now().UTC().Format(time.RFC3339Nano),
		"connections": 1,
	})
}

// blob streams ?bytes=N bytes (default 1 MiB) from one reused buffer.
func blob(w http.ResponseWriter, r *http.Request) {
	n := int64(1 << 20)
	if s := r.URL.Query().Get("bytes"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || v > maxBlob {
			http.Error(w, "bytes must be 0.."+strconv.Itoa(maxBlob), http.StatusBadRequest)
			return
		}
		n = v
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for n > 0 {
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		m, err := w.Write(chunk)
		if err != nil {
			return
		}
		n -= int64(m)
	}
}
