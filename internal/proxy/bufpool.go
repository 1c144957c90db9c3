package proxy

import "sync"

// copyBufferSize is the size of the buffers bodies are copied through. ReverseProxy's own
// default is a new 32 KiB buffer per request; a bulk download then costs a read and a write
// system call per 32 KiB at each hop. A Unix socket or loopback read returns up to 256 KiB
// when that much is waiting, so larger buffers cut the calls by up to 8×, and pooling them
// keeps small requests from allocating one each.
const copyBufferSize = 256 << 10

// envdCopyBufferSize is the buffer size for envd's port, whose traffic is mostly long-lived
// streams (process output, terminals, watchers): each holds its buffer at each hop for as
// long as it is open, so a large one would cost memory per open stream for no gain.
const envdCopyBufferSize = 32 << 10

// bufferPool is an httputil.BufferPool of buffers of one size.
type bufferPool struct {
	size int
	p    sync.Pool
}

func newBufferPool(size int) *bufferPool {
	b := &bufferPool{size: size}
	b.p.New = func() any {
		buf := make([]byte, size)
		return &buf
	}
	return b
}

// copyBuffers serves the sandboxes' own ports, envdBuffers envd's.
var copyBuffers, envdBuffers = newBufferPool(copyBufferSize), newBufferPool(envdCopyBufferSize)

func (b *bufferPool) Get() []byte { return *b.p.Get().(*[]byte) }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != b.size {
		return
	}
	buf = buf[:b.size]
	b.p.Put(&buf)
}
