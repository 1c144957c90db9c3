package proxy

import "sync"

// copyBufferSize is the size of the buffers bodies are copied through. ReverseProxy's own
// default is a new 32 KiB buffer per request; a bulk download then costs a read and a write
// system call per 32 KiB at each hop. A Unix socket or loopback read returns up to 256 KiB
// when that much is waiting, so larger buffers cut the calls by up to 8×, and pooling them
// keeps small requests from allocating one each.
const copyBufferSize = 256 << 10

// bufferPool is an httputil.BufferPool of copyBufferSize buffers shared by every proxy.
type bufferPool struct{ p sync.Pool }

var copyBuffers = &bufferPool{p: sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}}

func (b *bufferPool) Get() []byte { return *b.p.Get().(*[]byte) }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	buf = buf[:copyBufferSize]
	b.p.Put(&buf)
}
