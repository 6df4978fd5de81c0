package gateway

import (
	"sync"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/frag"
)

// bufPool recycles byte buffers of one capacity: buffers the gateway fills,
// hands to a worker or to the bind, and is done with when that returns.
// The bind's Send keeps none of its buffers (conn.Bind: StdNetBind copies
// them into the kernel, gatewaytest's Bind copies them), and the handshake
// package keeps none of the messages it is given.
//
// A put buffer holds its last contents until it is overwritten: handshake
// messages as received or sent, nothing secret. Control messages are
// cleared before they go back (ctlBufs), since one that was not sealed
// still holds its plaintext.
type bufPool struct {
	size int
	p    sync.Pool
}

func newBufPool(size int) *bufPool { return &bufPool{size: size} }

// get returns a buffer of n bytes whose contents are unspecified: a pooled
// one when n <= size, else a new one (which put will not keep).
func (b *bufPool) get(n int) []byte {
	if n > b.size {
		return make([]byte, n)
	}
	if p, ok := b.p.Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, b.size)
}

// put hands back a buffer from get; other slices are ignored.
func (b *bufPool) put(buf []byte) {
	if cap(buf) != b.size {
		return
	}
	buf = buf[:0]
	b.p.Put(&buf)
}

var (
	// jobBufs holds the copies of Initiations and RekeyInits queued for
	// the workers (the receive buffer is reused by the next read).
	jobBufs = newBufPool(max(handshake.InitiationMaxLen, handshake.RekeyInitLen))
	// respBufs holds a Response while it is built and fragmented.
	respBufs = newBufPool(handshake.ResponseFullLen)
	// fragBufs holds the fragments of a Response (with its credential,
	// the largest) while they are sent.
	fragBufs = newBufPool(frag.SplitLen(handshake.ResponseFullLen, frag.DefaultMaxChunk))
	// ctlBufs holds a control message while it is sealed and sent.
	ctlBufs = newBufPool(ctlBufLen)
)

// ctlBufLen is room for a control message: 16 bytes before it (the
// transport header, sealed in place), its header and largest body, and
// padding and tag after it.
const ctlBufLen = 16 + control.HeaderLen + control.MaxBody + 2*16

// releaseJob hands a job's message back to its pool once the job is done
// with (handled or dropped).
func (g *Gateway) releaseJob(j job) {
	if j.kind == jobFinish {
		g.reasm.Recycle(j.b)
		return
	}
	jobBufs.put(j.b)
}
