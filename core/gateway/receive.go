package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// Buffer layout shared by the receive and TUN paths: a transport header's
// worth of room before the inner packet (the TUN offset, which also holds
// the virtio header Linux TUN offloads need), and room after it for
// padding and the tag.
const (
	tunOffset  = transport.HeaderSize
	maxSegment = 65535
	bufSize    = tunOffset + maxSegment + 2*transport.PadBlock + transport.TagSize
)

// rxBatch collects the inner packets of one receive batch for one TUN
// write.
type rxBatch struct {
	tun [][]byte
}

// receiveLoop reads datagrams from one ReceiveFunc until the bind closes.
func (g *Gateway) receiveLoop(ctx context.Context, fn conn.ReceiveFunc) {
	batch := max(g.bind.BatchSize(), 1)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	rx := &rxBatch{tun: make([][]byte, 0, batch)}
	for ctx.Err() == nil {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			if isClosed(err) || ctx.Err() != nil {
				return
			}
			g.cfg.Logger.Debug("receive failed", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		now := g.cfg.Now()
		for i := 0; i < n && i < batch; i++ {
			if sizes[i] <= 0 || eps[i] == nil {
				continue
			}
			g.handleDatagram(bufs[i][:sizes[i]], eps[i], now, rx)
			eps[i] = nil
		}
		g.flushTUN(rx)
	}
}

// flushTUN writes the collected inner packets to the TUN.
func (g *Gateway) flushTUN(rx *rxBatch) {
	if len(rx.tun) == 0 {
		return
	}
	var bytes uint64
	for _, b := range rx.tun {
		bytes += uint64(len(b) - tunOffset)
	}
	// Counted before the write, so a reader of the TUN sees the count.
	g.stats.TunTxPackets.Add(uint64(len(rx.tun)))
	g.stats.TunTxBytes.Add(bytes)
	if _, err := g.dev.Write(rx.tun, tunOffset); err != nil && !isClosed(err) {
		g.cfg.Logger.Debug("tun write failed", "error", err)
	}
	clear(rx.tun)
	rx.tun = rx.tun[:0]
}

// handleDatagram demultiplexes one datagram, cheapest checks first.
func (g *Gateway) handleDatagram(b []byte, ep conn.Endpoint, now time.Time, rx *rxBatch) {
	g.stats.RxDatagrams.Add(1)
	if len(b) < handshake.HeaderLen {
		g.stats.DropShort.Add(1)
		return
	}
	if b[1] != handshake.Version || b[2] != 0 || b[3] != 0 {
		g.stats.DropHeader.Add(1)
		return
	}
	switch handshake.MessageType(b[0]) {
	case handshake.TypeTransport:
		g.handleTransport(b, ep, now, rx)
	case handshake.TypeInitiation:
		g.handleInitiation(b, ep, now)
	case handshake.TypeFragment:
		g.handleFragment(b, ep, now)
	case handshake.TypeRekeyInit:
		g.handleRekeyInit(b, ep)
	default:
		g.stats.DropType.Add(1)
	}
}

// Offsets in an Initiation (docs/protocol.md §3.1).
const (
	initSenderOff    = 4
	initTimestampOff = 12
	initTokenLenOff  = 84
	initTokenOff     = 86
)

// handleInitiation runs the cheap checks (length, mac1, per-source rate,
// address proof) and queues a proven Initiation for the workers. Without
// proof the only answer is a 64-byte CookieReply.
func (g *Gateway) handleInitiation(b []byte, ep conn.Endpoint, now time.Time) {
	if len(b) < handshake.InitiationMinLen || len(b) > handshake.InitiationMaxLen {
		g.stats.DropLength.Add(1)
		return
	}
	tlen := int(binary.BigEndian.Uint16(b[initTokenLenOff:]))
	if tlen > handshake.MaxTokenLen || len(b) != handshake.InitiationMinLen+tlen {
		g.stats.DropLength.Add(1)
		return
	}
	if !g.cookies.CheckMAC1(b) {
		g.stats.DropMAC1.Add(1)
		return
	}
	src := addrOf(ep)
	if !src.IsValid() {
		g.stats.DropShort.Add(1)
		return
	}
	g.load.Observe(now)
	underLoad := g.load.UnderLoad(now)
	if !g.limiter.Allow(src.Addr(), now) {
		g.stats.DropRateLimited.Add(1)
		return
	}
	switch {
	case g.cookies.CheckMAC2(b, src, now):
		g.stats.ProofCookie.Add(1)
	case !underLoad && tlen > 0 && g.cookies.CheckToken(b[initTokenOff:initTokenOff+tlen], src.Addr(), now) == nil:
		g.stats.ProofToken.Add(1)
	default:
		reply, err := g.cookies.Reply(b, binary.BigEndian.Uint32(b[initSenderOff:]), src, now)
		if err != nil {
			g.cfg.Logger.Warn("cookie reply failed", "error", err)
			return
		}
		g.stats.CookieReplies.Add(1)
		g.send(ep, reply)
		return
	}
	jb := jobBufs.get(len(b))
	copy(jb, b)
	g.enqueue(job{kind: jobInitiation, b: jb, src: src, ep: ep})
}

// enqueue hands a job to the workers or drops it when they are behind.
func (g *Gateway) enqueue(j job) {
	select {
	case g.jobs <- j:
	default:
		g.stats.HandshakeQueueFull.Add(1)
		g.releaseJob(j)
	}
}

// handleFragment reassembles a Finish, only from a source with a half-open
// handshake (fragment state never precedes address proof).
func (g *Gateway) handleFragment(b []byte, ep conn.Endpoint, now time.Time) {
	if len(b) <= frag.HeaderLen {
		g.stats.DropLength.Add(1)
		return
	}
	src := addrOf(ep)
	g.table.RLock()
	ok := g.table.pendingBySrc[src] > 0
	g.table.RUnlock()
	if !ok {
		g.stats.FragNoState.Add(1)
		return
	}
	msg, done, err := g.reasm.Add(src, b, now)
	if err != nil {
		g.stats.FragRefused.Add(1)
		return
	}
	if !done {
		return
	}
	if len(msg) < handshake.FinishMinLen || handshake.MessageType(msg[0]) != handshake.TypeFinish {
		g.stats.FragNotFinish.Add(1)
		g.reasm.Recycle(msg)
		return
	}
	g.enqueue(job{kind: jobFinish, b: msg, src: src, ep: ep})
}

// handleRekeyInit queues a RekeyInit addressed to a live session.
func (g *Gateway) handleRekeyInit(b []byte, ep conn.Endpoint) {
	if len(b) != handshake.RekeyInitLen {
		g.stats.DropLength.Add(1)
		return
	}
	g.table.RLock()
	e := g.table.byIndex[binary.BigEndian.Uint32(b[8:])]
	g.table.RUnlock()
	if e == nil || e.sess == nil {
		g.stats.DropNoSession.Add(1)
		return
	}
	jb := jobBufs.get(len(b))
	copy(jb, b)
	g.enqueue(job{kind: jobRekey, b: jb, src: addrOf(ep), ep: ep})
}

// handleTransport opens a transport packet in place and routes its
// plaintext: keepalive, control message, or an inner IP packet for the TUN
// after cryptokey routing.
func (g *Gateway) handleTransport(b []byte, ep conn.Endpoint, now time.Time, rx *rxBatch) {
	h, err := transport.ParseHeader(b)
	if err != nil {
		g.stats.DropLength.Add(1)
		return
	}
	g.table.RLock()
	e := g.table.byIndex[h.ReceiverIndex]
	g.table.RUnlock()
	if e == nil || e.sess == nil {
		g.stats.DropNoSession.Add(1)
		return
	}
	s := e.sess
	ks := s.keys.Load()
	k := ks.find(h.ReceiverIndex)
	if k == nil {
		g.stats.DropNoSession.Add(1)
		return
	}
	if k.kp.Expired(now) {
		g.stats.DropExpired.Add(1)
		return
	}
	pt, _, err := k.kp.Open(b[transport.HeaderSize:transport.HeaderSize], b)
	switch {
	case err == nil:
	case errors.Is(err, transport.ErrReplay):
		g.stats.DropReplay.Add(1)
		return
	case errors.Is(err, transport.ErrClosed):
		g.stats.DropNoSession.Add(1)
		return
	default:
		g.stats.DropAuth.Add(1)
		return
	}
	// Authenticated from here on.
	s.lastRecv.Store(now.UnixNano())
	if k == ks.next {
		g.promote(s, k, now)
	}
	if src := addrOf(ep); src.IsValid() {
		if cur := s.endpoint.Load(); cur == nil || cur.addr != src {
			s.endpoint.Store(&epRef{ep: ep, addr: src})
		}
	}
	if len(pt) == 0 {
		g.stats.KeepalivesRx.Add(1)
		return
	}
	if control.IsControl(pt) {
		g.handleControl(s, pt, now)
		return
	}
	inner, err := transport.ParseInner(pt)
	if err != nil {
		g.stats.DropInner.Add(1)
		return
	}
	// Cryptokey routing: the inner source is one of the session's own
	// tunnel addresses (an unset family's invalid Addr matches nothing).
	if inner.Src != s.addr && inner.Src != s.addr6 {
		g.stats.DropSpoofed.Add(1)
		return
	}
	if s.flow != nil && g.flows.FromAgent(s.flow, pt, inner, now) != flow.Forward {
		// Dropped by policy, or held until its flow is decided.
		return
	}
	s.rxBytes.Add(uint64(inner.Length))
	rx.tun = append(rx.tun, b[:tunOffset+inner.Length])
	if len(rx.tun) == cap(rx.tun) {
		g.flushTUN(rx)
	}
}

// handleControl acts on a control message from an agent.
func (g *Gateway) handleControl(s *session, pt []byte, now time.Time) {
	m, err := control.Parse(pt)
	if err != nil {
		if errors.Is(err, control.ErrUnknownType) {
			g.stats.ControlUnknown.Add(1)
		} else {
			g.stats.ControlMalformed.Add(1)
		}
		return
	}
	switch m := m.(type) {
	case *control.Pulse:
		d, err := g.tracker.Beat(s.id, m, now)
		if err != nil {
			g.stats.PulsesRefused.Add(1)
			return
		}
		g.stats.PulsesAccepted.Add(1)
		if d.End {
			g.endSession(s, control.CloseNotAuthorized, d.Reason, true)
			return
		}
		if s.flow != nil {
			// Continuous verification: the open flows are re-checked
			// with the posture of every accepted pulse.
			g.flows.SetPulse(s.flow, flow.Posture{OS: d.Posture.OS, AgentVersion: d.Posture.AgentVersion,
				Facts: d.Posture.Facts, ClockOffset: d.Posture.ClockOffset, Skew: d.Posture.Skew})
			// And the session itself: connect is asked again with the
			// posture (connect.go).
			g.recheckConnect(s, now)
		}
		ack := d.Ack
		if ep := s.endpoint.Load(); ep != nil {
			if tok, err := g.cookies.IssueToken(ep.addr.Addr(), now); err == nil {
				ack.AddressToken = tok
			}
		}
		g.sendControl(s, &ack, now)
	case *control.Close:
		g.stats.ClosesRx.Add(1)
		g.endSession(s, 0, "", false)
	default:
		// SessionConfig, PulseAck and Denial travel the other way.
		g.stats.ControlUnknown.Add(1)
	}
}

// promote makes the rekeyed keypair k (the agent just used it) the
// current one; the replaced one opens packets for OldKeyLifetime more.
func (g *Gateway) promote(s *session, k *keyState, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys.Load()
	if ks.next != k || s.ended.Load() {
		return
	}
	if old := ks.previous; old != nil {
		g.retireLocked(s, old)
	}
	s.keys.Store(&keySet{current: k, previous: ks.current, prevUntil: now.Add(OldKeyLifetime)})
}

// retireLocked zeroizes a keyState of s and forgets its index; the caller
// holds s.mu.
func (g *Gateway) retireLocked(s *session, k *keyState) {
	idx := k.kp.LocalIndex()
	g.table.Lock()
	if e := g.table.byIndex[idx]; e != nil && e.sess == s {
		delete(g.table.byIndex, idx)
	}
	g.table.Unlock()
	k.kp.Zeroize()
	k.res.Zeroize()
}

// sessionByID returns a live session.
func (g *Gateway) sessionByID(id pulse.ID) *session {
	g.table.RLock()
	defer g.table.RUnlock()
	return g.table.byID[id]
}
