// Package gatewaytest is an in-memory UDP network for tests of the gateway
// engine and its clients: one conn.Bind for the gateway and any number of
// client ports, each with its own source address and port, so tests can
// play many agents, spoof sources and watch exactly what the gateway sends
// where.
//
// It must not be used outside tests: datagrams live in bounded channels and
// are dropped (and counted) when a receiver does not keep up, as a real
// network would drop them.
package gatewaytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// QueueLen is how many datagrams each direction of a port (and the gateway's
// inbound queue) holds before new ones are dropped.
const QueueLen = 4096

// ErrClosed is returned by a Port or the Bind after the network or the bind
// was closed.
var ErrClosed = errors.New("gatewaytest: closed")

// Endpoint is a conn.Endpoint that is just an address and port. Its Addr and
// Port methods (promoted from netip.AddrPort) are what the gateway reads.
type Endpoint struct{ netip.AddrPort }

var _ conn.Endpoint = Endpoint{}

// ClearSrc implements conn.Endpoint.
func (Endpoint) ClearSrc() {}

// SrcToString implements conn.Endpoint.
func (Endpoint) SrcToString() string { return "" }

// DstToString implements conn.Endpoint.
func (e Endpoint) DstToString() string { return e.AddrPort.String() }

// DstToBytes implements conn.Endpoint.
func (e Endpoint) DstToBytes() []byte { b, _ := e.AddrPort.MarshalBinary(); return b }

// DstIP implements conn.Endpoint.
func (e Endpoint) DstIP() netip.Addr { return e.AddrPort.Addr() }

// SrcIP implements conn.Endpoint.
func (Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

type datagram struct {
	b   []byte
	src netip.AddrPort
}

// Network connects one gateway Bind to client Ports.
type Network struct {
	bind *Bind

	mu    sync.Mutex
	ports map[netip.AddrPort]*Port

	// Dropped counts datagrams lost because a queue was full or nobody
	// listened at the destination.
	Dropped atomic.Uint64
}

// NewNetwork returns a network whose gateway Bind hands out batches of up to
// batch datagrams (at least 1).
func NewNetwork(batch int) *Network {
	if batch < 1 {
		batch = 1
	}
	n := &Network{ports: map[netip.AddrPort]*Port{}}
	n.bind = &Bind{net: n, batch: batch, in: make(chan datagram, QueueLen), done: make(chan struct{})}
	return n
}

// Bind returns the gateway's side.
func (n *Network) Bind() *Bind { return n.bind }

// Port returns the client port at addr, creating it on first use.
func (n *Network) Port(addr netip.AddrPort) *Port {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.ports[addr]; ok {
		return p
	}
	p := &Port{net: n, addr: addr, in: make(chan []byte, QueueLen)}
	n.ports[addr] = p
	return p
}

// Inject delivers b to the gateway as if sent from src, without a port
// to receive any answer (answers to src are dropped and counted).
func (n *Network) Inject(src netip.AddrPort, b []byte) {
	n.bind.deliver(datagram{b: append([]byte(nil), b...), src: src})
}

// Bind is the gateway's conn.Bind on the network.
type Bind struct {
	net   *Network
	batch int
	in    chan datagram

	mu     sync.Mutex
	open   bool
	done   chan struct{}
	closed bool

	// Sent counts datagrams the gateway sent, Batches the Send calls.
	Sent, Batches atomic.Uint64
}

var _ conn.Bind = (*Bind)(nil)

func (b *Bind) deliver(d datagram) {
	select {
	case b.in <- d:
	default:
		b.net.Dropped.Add(1)
	}
}

// Open implements conn.Bind: one receive function.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	if b.closed {
		b.done = make(chan struct{})
		b.closed = false
	}
	b.open = true
	done := b.done
	return []conn.ReceiveFunc{func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var d datagram
		select {
		case <-done:
			return 0, net.ErrClosed
		case d = <-b.in:
		}
		n := 0
		for {
			if len(d.b) > len(bufs[n]) {
				sizes[n] = 0 // too large for the buffer: lost, as a truncated read would be
			} else {
				sizes[n] = copy(bufs[n], d.b)
			}
			eps[n] = Endpoint{d.src}
			n++
			if n == len(bufs) || n == b.batch {
				return n, nil
			}
			select {
			case d = <-b.in:
			default:
				return n, nil
			}
		}
	}}, port, nil
}

// Close implements conn.Bind.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		close(b.done)
		b.closed = true
	}
	b.open = false
	return nil
}

// SetMark implements conn.Bind.
func (b *Bind) SetMark(uint32) error { return nil }

// Send implements conn.Bind: each buffer goes to the port at ep.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	b.Batches.Add(1)
	b.net.mu.Lock()
	p := b.net.ports[e.AddrPort]
	b.net.mu.Unlock()
	for _, buf := range bufs {
		b.Sent.Add(1)
		if p == nil {
			b.net.Dropped.Add(1)
			continue
		}
		select {
		case p.in <- append([]byte(nil), buf...):
		default:
			b.net.Dropped.Add(1)
		}
	}
	return nil
}

// ParseEndpoint implements conn.Bind.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("gatewaytest: %w", err)
	}
	return Endpoint{ap}, nil
}

// BatchSize implements conn.Bind.
func (b *Bind) BatchSize() int { return b.batch }

// Port is a client socket on the network.
type Port struct {
	net  *Network
	addr netip.AddrPort
	in   chan []byte
}

// Addr is the port's address, the source of what it sends.
func (p *Port) Addr() netip.AddrPort { return p.addr }

// Send sends b to the gateway.
func (p *Port) Send(b []byte) error {
	p.net.bind.deliver(datagram{b: append([]byte(nil), b...), src: p.addr})
	return nil
}

// Recv returns the next datagram the gateway sent to this port, or ctx's
// error.
func (p *Port) Recv(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.in:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TryRecv returns a datagram already queued, if any.
func (p *Port) TryRecv() ([]byte, bool) {
	select {
	case b := <-p.in:
		return b, true
	default:
		return nil, false
	}
}

// Pending returns how many datagrams wait in the port's queue.
func (p *Port) Pending() int { return len(p.in) }
