package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// sendGroup is the packets of one TUN batch going to one endpoint.
type sendGroup struct {
	ep   conn.Endpoint
	addr netip.AddrPort
	bufs [][]byte
}

// tunReadLoop reads packets the kernel routes into the TUN (to agents'
// tunnel addresses), seals each for the session owning its destination
// and sends them grouped per endpoint.
func (g *Gateway) tunReadLoop(ctx context.Context) {
	batch := max(g.dev.BatchSize(), 1)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, batch)
	var groups []sendGroup
	for ctx.Err() == nil {
		n, err := g.dev.Read(bufs, sizes, tunOffset)
		if err != nil {
			if ctx.Err() != nil || isClosed(err) {
				return
			}
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			g.fail(fmt.Errorf("gateway: tun read: %w: %w", ErrDevice, err))
			return
		}
		now := g.cfg.Now()
		groups = groups[:0]
		for i := 0; i < n && i < batch; i++ {
			if sizes[i] <= 0 || sizes[i] > maxSegment {
				continue
			}
			if grp, out, ok := g.sealFromTUN(bufs[i], sizes[i], now); ok {
				groups = addToGroup(groups, grp, out)
			}
		}
		for i := range groups {
			g.send(groups[i].ep, groups[i].bufs...)
			clear(groups[i].bufs)
			groups[i].bufs = groups[i].bufs[:0]
		}
	}
}

// sealFromTUN seals the packet at buf[tunOffset:tunOffset+size] in place
// and returns its destination endpoint and the transport packet.
func (g *Gateway) sealFromTUN(buf []byte, size int, now time.Time) (*epRef, []byte, bool) {
	pkt := buf[tunOffset : tunOffset+size]
	inner, err := transport.ParseInner(pkt)
	if err != nil {
		g.stats.TunRxBad.Add(1)
		return nil, nil, false
	}
	g.table.RLock()
	s := g.table.byAddr[inner.Dst]
	var peer *session
	if s != nil && s.flow != nil {
		peer = g.table.byAddr[inner.Src]
	}
	g.table.RUnlock()
	if s == nil {
		g.stats.TunNoRoute.Add(1)
		return nil, nil, false
	}
	if s.flow != nil {
		var pf *flow.Session
		if peer != nil {
			pf = peer.flow
		}
		if g.flows.ToAgent(s.flow, pkt, inner, pf, now) != flow.Forward {
			return nil, nil, false
		}
	}
	ks, ep := s.keys.Load(), s.endpoint.Load()
	if ks == nil || ks.current == nil || ep == nil || ks.current.kp.Expired(now) {
		g.stats.TunNoRoute.Add(1)
		return nil, nil, false
	}
	pkt = pkt[:inner.Length]
	out, err := ks.current.kp.Seal(buf[:0], pkt)
	if err != nil {
		g.stats.TunNoRoute.Add(1)
		return nil, nil, false
	}
	g.stats.TunRxPackets.Add(1)
	s.txBytes.Add(uint64(len(pkt)))
	s.lastSent.Store(now.UnixNano())
	return ep, out, true
}

// addToGroup appends out to the group of ep's address, or a new group.
func addToGroup(groups []sendGroup, ep *epRef, out []byte) []sendGroup {
	for i := range groups {
		if groups[i].addr == ep.addr {
			groups[i].bufs = append(groups[i].bufs, out)
			return groups
		}
	}
	if len(groups) < cap(groups) {
		groups = groups[:len(groups)+1]
		g := &groups[len(groups)-1]
		g.ep, g.addr = ep.ep, ep.addr
		g.bufs = append(g.bufs[:0], out)
		return groups
	}
	return append(groups, sendGroup{ep: ep.ep, addr: ep.addr, bufs: [][]byte{out}})
}
