package tunneltest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
	"github.com/avonzt/avon/internal/pqx509"
)

// Config configures a Gateway.
type Config struct {
	Bind conn.Bind
	Port uint16 // for Bind.Open
	PKI  *PKI
	// Addresses, Routes, MTU and PulseInterval go into every SessionConfig.
	Addresses     []netip.Prefix
	Routes        []netip.Prefix
	MTU           uint16
	PulseInterval time.Duration
	// NoTokens: issue no address tokens (every handshake needs a cookie).
	NoTokens bool
	// NoDelegation: sign every Response with the gateway key itself, as a
	// gateway with delegated_key { enabled = false } does. By default the
	// gateway signs with a delegated key (a new one at every Restart).
	NoDelegation bool
}

// Stats counts what the gateway did.
type Stats struct {
	CookieReplies, Responses, Sessions, Rekeys, Pulses, Errors, Dropped, IPPackets, Closes int
	// CredentialsSent counts Responses that carried the delegated credential.
	CredentialsSent int
	Refusals        []string
	LastPulse       control.Pulse
}

type gwSession struct {
	res      *handshake.Result
	kps      []*transport.Keypair // oldest first; the last is the newest
	send     *transport.Keypair   // the newest keypair that opened a packet
	ep       conn.Endpoint
	pulseID  pulse.ID
	agentIPs []netip.Addr
	leaf     []byte // the agent's certificate from the handshake
}

type pendingEntry struct {
	p   *handshake.PendingHandshake
	src netip.AddrPort
}

// Gateway is a test responder. Its methods are safe for concurrent use.
type Gateway struct {
	cfg    Config
	signer *handshake.MLDSA65Signer
	verif  *handshake.ChainVerifier
	skew   atomic.Int64 // added to time.Now: the gateway's calibrated clock
	in     chan []byte

	mu       sync.Mutex
	resp     *handshake.Responder
	checker  *cookie.Checker
	tracker  *pulse.Tracker
	reasm    *frag.Reassembler
	pending  map[uint32]*pendingEntry
	byIndex  map[uint32]*gwSession
	sessions []*gwSession
	stats    Stats

	wg     sync.WaitGroup
	closed bool
}

// New creates a gateway and opens its bind.
func New(cfg Config) (*Gateway, error) {
	if cfg.MTU == 0 {
		cfg.MTU = 1420
	}
	if cfg.PulseInterval == 0 {
		cfg.PulseInterval = time.Second
	}
	s, err := handshake.NewMLDSA65Signer(cfg.PKI.GatewayKey.PrivateKey(), rand.Reader)
	if err != nil {
		return nil, err
	}
	v, err := handshake.NewChainVerifier([][]byte{cfg.PKI.RootDER}, handshake.ChainVerifierOptions{})
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, signer: s, verif: v, in: make(chan []byte, 1024)}
	if err := g.Restart(); err != nil {
		return nil, err
	}
	fns, _, err := cfg.Bind.Open(cfg.Port)
	if err != nil {
		return nil, err
	}
	for _, fn := range fns {
		g.wg.Add(1)
		go g.receive(fn)
	}
	return g, nil
}

// Now is the gateway's calibrated clock.
func (g *Gateway) Now() time.Time { return time.Now().Add(time.Duration(g.skew.Load())) }

// SetSkew moves the gateway's clock by d.
func (g *Gateway) SetSkew(d time.Duration) { g.skew.Store(int64(d)) }

// Restart forgets every session, pending handshake, cookie secret and token
// key, as a gateway process restart does.
func (g *Gateway) Restart() error {
	var keys *handshake.DelegatedKeys
	if !g.cfg.NoDelegation {
		k, err := handshake.IssueCredential(g.signer, rand.Reader, g.Now(), time.Hour)
		if err != nil {
			return err
		}
		keys = &handshake.DelegatedKeys{}
		keys.Install(k)
	}
	r, err := handshake.NewResponder(handshake.ResponderConfig{Signer: g.signer, Verifier: g.verif, Rand: rand.Reader, Now: g.Now, Delegated: keys})
	if err != nil {
		return err
	}
	c, err := cookie.NewChecker(r.ID(), rand.Reader, g.Now())
	if err != nil {
		return err
	}
	t, err := pulse.New(pulse.Config{Interval: g.cfg.PulseInterval, Missed: 3, MaxSkew: 5 * time.Second}, rand.Reader)
	if err != nil {
		return err
	}
	ra, err := frag.NewReassembler(frag.Config{})
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sessions {
		for _, kp := range s.kps {
			kp.Zeroize()
		}
	}
	if g.checker != nil {
		g.checker.Close()
	}
	if g.tracker != nil {
		g.tracker.Close()
	}
	g.resp, g.checker, g.tracker, g.reasm = r, c, t, ra
	g.pending, g.byIndex, g.sessions = map[uint32]*pendingEntry{}, map[uint32]*gwSession{}, nil
	return nil
}

// Close closes the bind and waits for the receivers.
func (g *Gateway) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	_ = g.cfg.Bind.Close()
	g.wg.Wait()
}

// Inbound delivers the IP packets agents sent through the tunnel.
func (g *Gateway) Inbound() <-chan []byte { return g.in }

// Stats returns a copy of the counters.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	s.Refusals = slices.Clone(s.Refusals)
	return s
}

// Sessions is the number of live sessions.
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// PeerLeaves returns the agent certificate (DER) each live session was
// established with, oldest session first.
func (g *Gateway) PeerLeaves() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([][]byte, 0, len(g.sessions))
	for _, s := range g.sessions {
		out = append(out, slices.Clone(s.leaf))
	}
	return out
}

// SendIP sends an IP packet to the newest session's agent.
func (g *Gateway) SendIP(pkt []byte) error { return g.sendPlain(pkt) }

// SendControl sends a control message to the newest session's agent; a
// Close also ends the session here.
func (g *Gateway) SendControl(m control.Message) error {
	b, err := control.Marshal(m)
	if err != nil {
		return err
	}
	if err := g.sendPlain(b); err != nil {
		return err
	}
	if _, ok := m.(*control.Close); ok {
		g.mu.Lock()
		if n := len(g.sessions); n > 0 {
			g.dropLocked(g.sessions[n-1])
		}
		g.mu.Unlock()
	}
	return nil
}

func (g *Gateway) sendPlain(b []byte) error {
	g.mu.Lock()
	if len(g.sessions) == 0 {
		g.mu.Unlock()
		return errors.New("no session")
	}
	s := g.sessions[len(g.sessions)-1]
	kp, ep := s.send, s.ep
	g.mu.Unlock()
	p, err := kp.Seal(nil, b)
	if err != nil {
		return err
	}
	return g.cfg.Bind.Send([][]byte{p}, ep)
}

func (g *Gateway) dropLocked(s *gwSession) {
	for _, kp := range s.kps {
		delete(g.byIndex, kp.LocalIndex())
		kp.Zeroize()
	}
	g.tracker.Remove(s.pulseID)
	g.sessions = slices.DeleteFunc(g.sessions, func(x *gwSession) bool { return x == s })
}

func (g *Gateway) receive(fn conn.ReceiveFunc) {
	defer g.wg.Done()
	bs := max(g.cfg.Bind.BatchSize(), 1)
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes := make([]int, bs)
	eps := make([]conn.Endpoint, bs)
	for fails := 0; fails < 100; {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			fails++
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < n && i < bs; i++ {
			g.handle(bufs[i][:sizes[i]], eps[i])
		}
	}
}

func (g *Gateway) send(b []byte, ep conn.Endpoint) { _ = g.cfg.Bind.Send([][]byte{b}, ep) }

func (g *Gateway) sendFrags(msg []byte, ep conn.Endpoint) {
	var id [4]byte
	_, _ = rand.Read(id[:])
	frags, err := frag.Split(msg, binary.BigEndian.Uint32(id[:]), frag.DefaultMaxChunk)
	if err != nil {
		return
	}
	for _, f := range frags {
		g.send(f, ep)
	}
}

func randIndex() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func (g *Gateway) count(f func(*Stats)) {
	g.mu.Lock()
	f(&g.stats)
	g.mu.Unlock()
}

func (g *Gateway) refuse(err error) {
	g.count(func(s *Stats) { s.Errors++; s.Refusals = append(s.Refusals, err.Error()) })
}

func (g *Gateway) handle(b []byte, ep conn.Endpoint) {
	src, err := netip.ParseAddrPort(ep.DstToString())
	if err != nil || len(b) < 4 {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	switch handshake.MessageType(b[0]) {
	case handshake.TypeInitiation:
		g.initiation(b, ep, src)
	case handshake.TypeFragment:
		g.fragment(b, ep, src)
	case handshake.TypeTransport:
		g.transport(b, ep)
	case handshake.TypeRekeyInit:
		g.rekey(b, ep)
	default:
		g.count(func(s *Stats) { s.Dropped++ })
	}
}

func (g *Gateway) initiation(b []byte, ep conn.Endpoint, src netip.AddrPort) {
	g.mu.Lock()
	resp, checker := g.resp, g.checker
	g.mu.Unlock()
	if !checker.CheckMAC1(b) {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	m, err := handshake.ParseInitiation(b)
	if err != nil {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	now := g.Now()
	proven := checker.CheckMAC2(b, src, now) || (len(m.Token) > 0 && checker.CheckToken(m.Token, src.Addr(), now) == nil)
	if !proven {
		if r, err := checker.Reply(b, m.SenderIndex, src, now); err == nil {
			g.count(func(s *Stats) { s.CookieReplies++ })
			g.send(r, ep)
		}
		return
	}
	idx := randIndex()
	out, p, err := resp.HandleInitiation(b, idx)
	if err != nil {
		g.refuse(err)
		if e, ok := resp.ErrorFor(m.SenderIndex, err); ok {
			g.send(e, ep)
		}
		return
	}
	g.mu.Lock()
	g.pending[idx] = &pendingEntry{p: p, src: src}
	g.stats.Responses++
	if len(out) == handshake.ResponseFullLen {
		g.stats.CredentialsSent++
	}
	g.mu.Unlock()
	g.sendFrags(out, ep)
}

func (g *Gateway) fragment(b []byte, ep conn.Endpoint, src netip.AddrPort) {
	g.mu.Lock()
	proven := false
	for _, pe := range g.pending {
		if pe.src == src {
			proven = true
		}
	}
	reasm := g.reasm
	g.mu.Unlock()
	if !proven {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	full, done, err := reasm.Add(src, b, g.Now())
	if err != nil || !done {
		return
	}
	fm, err := handshake.ParseFinish(full)
	if err != nil {
		return
	}
	g.mu.Lock()
	pe := g.pending[fm.ReceiverIndex]
	g.mu.Unlock()
	if pe == nil {
		return
	}
	res, err := pe.p.HandleFinish(full)
	if err != nil {
		g.refuse(err)
		if e, ok := pe.p.ErrorFor(err); ok {
			g.send(e, ep)
		}
		if !errors.Is(err, handshake.ErrDecrypt) {
			g.mu.Lock()
			delete(g.pending, fm.ReceiverIndex)
			g.mu.Unlock()
		}
		return
	}
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, time.Now())
	if err != nil {
		g.refuse(err)
		return
	}
	s := &gwSession{res: res, kps: []*transport.Keypair{kp}, send: kp, ep: ep, leaf: slices.Clone(res.Peer.Leaf)}
	copy(s.pulseID[:], res.SessionID[:])
	for _, a := range g.cfg.Addresses {
		s.agentIPs = append(s.agentIPs, a.Addr())
	}
	g.mu.Lock()
	delete(g.pending, fm.ReceiverIndex)
	serial := "0"
	if leaf, perr := pqx509.ParseCertificate(res.Peer.Leaf); perr == nil {
		serial = leaf.SerialNumber.Text(16)
	}
	tok, err := g.tracker.Add(pulse.SessionInfo{ID: s.pulseID, AgentID: res.Peer.ID, CertSerial: serial, Established: g.Now()})
	var at []byte
	if !g.cfg.NoTokens {
		at, _ = g.checker.IssueToken(src.Addr(), g.Now())
	}
	if err == nil {
		g.byIndex[kp.LocalIndex()] = s
		g.sessions = append(g.sessions, s)
		g.stats.Sessions++
	}
	g.mu.Unlock()
	if err != nil {
		g.refuse(err)
		return
	}
	keepalive, _ := kp.Seal(nil, nil)
	g.send(keepalive, ep)
	sc, err := control.Marshal(&control.SessionConfig{Addresses: g.cfg.Addresses, Routes: g.cfg.Routes, MTU: g.cfg.MTU,
		PulseInterval: g.cfg.PulseInterval, AddressToken: at, SessionToken: tok})
	if err != nil {
		g.refuse(fmt.Errorf("session config: %w", err))
		return
	}
	p, _ := kp.Seal(nil, sc)
	g.send(p, ep)
}

func (g *Gateway) transport(b []byte, ep conn.Endpoint) {
	h, err := transport.ParseHeader(b)
	if err != nil {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	g.mu.Lock()
	s := g.byIndex[h.ReceiverIndex]
	var kp *transport.Keypair
	if s != nil {
		for _, k := range s.kps {
			if k.LocalIndex() == h.ReceiverIndex {
				kp = k
			}
		}
	}
	g.mu.Unlock()
	if kp == nil {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	pt, _, err := kp.Open(nil, b)
	if err != nil {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	g.mu.Lock()
	s.ep = ep // follow the agent's address on authenticated packets
	if kp == s.kps[len(s.kps)-1] {
		s.send = kp
	}
	g.mu.Unlock()
	switch {
	case len(pt) == 0:
	case control.IsControl(pt):
		g.control(s, pt, ep)
	default:
		in, err := transport.ParseInner(pt)
		if err != nil || !slices.Contains(s.agentIPs, in.Src) {
			g.count(func(s *Stats) { s.Dropped++ }) // cryptokey routing
			return
		}
		g.count(func(s *Stats) { s.IPPackets++ })
		select {
		case g.in <- slices.Clone(pt[:in.Length]):
		default:
		}
	}
}

func (g *Gateway) control(s *gwSession, pt []byte, ep conn.Endpoint) {
	m, err := control.Parse(pt)
	if err != nil {
		g.refuse(err)
		return
	}
	switch v := m.(type) {
	case *control.Pulse:
		g.mu.Lock()
		tr := g.tracker
		g.mu.Unlock()
		d, err := tr.Beat(s.pulseID, v, g.Now())
		if err != nil {
			g.refuse(err)
			return
		}
		g.count(func(st *Stats) { st.Pulses++; st.LastPulse = *v })
		b, err := control.Marshal(&d.Ack)
		if err != nil {
			return
		}
		g.mu.Lock()
		kp := s.send
		g.mu.Unlock()
		p, err := kp.Seal(nil, b)
		if err == nil {
			g.send(p, ep)
		}
	case *control.Close:
		g.mu.Lock()
		g.stats.Closes++
		g.dropLocked(s)
		g.mu.Unlock()
	}
}

func (g *Gateway) rekey(b []byte, ep conn.Endpoint) {
	if len(b) < 12 {
		return
	}
	idx := binary.BigEndian.Uint32(b[8:12])
	g.mu.Lock()
	s := g.byIndex[idx]
	g.mu.Unlock()
	if s == nil {
		g.count(func(s *Stats) { s.Dropped++ })
		return
	}
	newIdx := randIndex()
	out, res, err := handshake.HandleRekeyInit(s.res, b, rand.Reader, g.Now, newIdx)
	if err != nil {
		g.refuse(err)
		return
	}
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, time.Now())
	if err != nil {
		g.refuse(err)
		return
	}
	g.mu.Lock()
	s.res = res
	s.kps = append(s.kps, kp)
	if len(s.kps) > 3 {
		old := s.kps[0]
		delete(g.byIndex, old.LocalIndex())
		old.Zeroize()
		s.kps = s.kps[1:]
	}
	g.byIndex[newIdx] = s
	g.stats.Rekeys++
	g.mu.Unlock()
	g.send(out, ep)
}

// Wait polls cond every 10 ms until it holds or ctx ends.
func Wait(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}
