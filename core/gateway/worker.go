package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
	"github.com/avonzt/avon/internal/pqx509"
)

// ipamTimeout bounds one address assignment.
const ipamTimeout = 5 * time.Second

// worker runs handshake cryptography for queued jobs.
func (g *Gateway) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-g.jobs:
			switch j.kind {
			case jobInitiation:
				g.doInitiation(j)
			case jobFinish:
				g.doFinish(ctx, j)
			case jobRekey:
				g.doRekey(j)
			}
			// Nothing keeps j.b past its handler (askConnect keeps the
			// job for its endpoint and source only).
			g.releaseJob(j)
		case c := <-g.connects:
			g.doConnected(ctx, c)
		}
	}
}

// reserveIndex draws a random local index not in use and reserves it
// (with a pending slot for src when pending is set). It reports false
// when a table is full or the random source fails.
func (g *Gateway) reserveIndex(src netip.AddrPort, pending bool) (uint32, *indexEntry, bool) {
	for range 16 {
		idx, err := g.randUint32()
		if err != nil {
			return 0, nil, false
		}
		if idx == 0 {
			continue
		}
		g.table.Lock()
		if pending && (g.table.pending >= g.cfg.MaxPending || len(g.table.byID) >= g.cfg.MaxSessions) {
			g.table.Unlock()
			return 0, nil, false
		}
		if _, used := g.table.byIndex[idx]; used {
			g.table.Unlock()
			continue
		}
		e := &indexEntry{}
		g.table.byIndex[idx] = e
		if pending {
			g.table.pending++
			g.table.pendingBySrc[src]++
		}
		g.table.Unlock()
		return idx, e, true
	}
	return 0, nil, false
}

// releasePendingLocked frees a pending slot; the caller holds table.
func (g *Gateway) releasePendingLocked(idx uint32, src netip.AddrPort) {
	delete(g.table.byIndex, idx)
	delete(g.table.pendings, idx)
	g.releasePendingCountLocked(src)
}

// releasePendingCountLocked frees the pending counts of src; the caller
// holds table.
func (g *Gateway) releasePendingCountLocked(src netip.AddrPort) {
	g.table.pending--
	if g.table.pendingBySrc[src]--; g.table.pendingBySrc[src] <= 0 {
		delete(g.table.pendingBySrc, src)
	}
}

func (g *Gateway) releasePending(idx uint32, src netip.AddrPort) {
	g.table.Lock()
	g.releasePendingLocked(idx, src)
	g.table.Unlock()
}

// doInitiation answers a proven Initiation with a fragmented Response.
func (g *Gateway) doInitiation(j job) {
	sender := binary.BigEndian.Uint32(j.b[initSenderOff:])
	if g.cfg.AEAD != 0 && handshake.AEADID(j.b[10]) != g.cfg.AEAD {
		g.stats.InitiationRefused.Add(1)
		g.sendError(j, g.responder.ErrorMessage(sender, handshake.CodeUnsupportedVersion, "transport aead not accepted"))
		return
	}
	idx, entry, ok := g.reserveIndex(j.src, true)
	if !ok {
		g.stats.Busy.Add(1)
		g.sendError(j, g.responder.ErrorMessage(sender, handshake.CodeBusy, ""))
		return
	}
	g.stats.HandshakesStarted.Add(1)
	rbuf := respBufs.get(0)
	defer respBufs.put(rbuf) // the fragments below are copies
	resp, p, err := g.responder.HandleInitiationTo(rbuf, j.b, idx)
	if err != nil {
		g.releasePending(idx, j.src)
		g.stats.InitiationRefused.Add(1)
		if msg, ok := g.responder.ErrorFor(sender, err); ok {
			g.sendError(j, msg)
		}
		g.cfg.Logger.Debug("initiation refused", "source", j.src.String(), "error", err)
		return
	}
	msgID, err := g.randUint32()
	var frags [][]byte
	fbuf := fragBufs.get(0)
	defer fragBufs.put(fbuf)
	if err == nil {
		frags, err = frag.SplitForGSOTo(fbuf, resp, msgID, frag.DefaultMaxChunk)
	}
	if err != nil {
		g.releasePending(idx, j.src)
		p.Zeroize()
		g.cfg.Logger.Error("response not sent", "error", err)
		return
	}
	g.table.Lock()
	ts := int64(binary.BigEndian.Uint64(j.b[initTimestampOff:]))
	entry.pending = &pendingHS{p: p, src: j.src, ep: j.ep, created: p.Created(), skew: time.Unix(0, ts).Sub(p.Created())}
	g.table.pendings[idx] = entry.pending
	g.table.Unlock()
	g.stats.Responses.Add(1)
	g.send(j.ep, frags...)
}

func (g *Gateway) sendError(j job, msg []byte) {
	if msg == nil {
		return
	}
	g.stats.HandshakeErrors.Add(1)
	g.send(j.ep, msg)
}

// finishKeepsPending reports whether a HandleFinish error left the
// half-open handshake usable (nothing decrypted).
func finishKeepsPending(err error) bool {
	return errors.Is(err, handshake.ErrTruncated) || errors.Is(err, handshake.ErrIndex) ||
		errors.Is(err, handshake.ErrDecrypt) || errors.Is(err, handshake.ErrMalformed)
}

// doFinish completes a handshake and establishes the session.
func (g *Gateway) doFinish(ctx context.Context, j job) {
	idx := binary.BigEndian.Uint32(j.b[4:])
	g.table.RLock()
	e := g.table.byIndex[idx]
	g.table.RUnlock()
	if e == nil || e.pending == nil || !e.pending.done.CompareAndSwap(false, true) {
		g.stats.FinishRefused.Add(1)
		return
	}
	ph := e.pending
	res, err := ph.p.HandleFinish(j.b)
	if err != nil {
		g.stats.FinishRefused.Add(1)
		if msg, ok := ph.p.ErrorFor(err); ok {
			g.sendError(j, msg)
		} else if finishKeepsPending(err) {
			ph.done.Store(false)
			return
		}
		g.dropPending(idx, ph)
		g.cfg.Logger.Info("finish refused", "source", j.src.String(), "error", err)
		return
	}
	if g.flows != nil {
		// Admitted by policy: the rest happens when the decision is in
		// (connect.go), this worker moves on.
		g.askConnect(ctx, idx, ph, res, j)
		return
	}
	g.finishEstablish(ctx, idx, ph, res, j, nil)
}

// admission is what establishing a session learnt of its agent before the
// session exists: the certificate serial and the agent's groups.
type admission struct {
	serial string
	groups []string
}

// admit checks an authenticated agent before it gets a session: its leaf
// serial, Config.Authorize, and its groups (when policy is enforced).
func (g *Gateway) admit(ctx context.Context, res *handshake.Result) (*admission, error) {
	serial, err := peerSerial(res.Peer)
	if err != nil {
		return nil, err
	}
	a := &admission{serial: serial}
	needGroups := g.flows != nil && g.cfg.Policy.Groups != nil
	if g.cfg.Authorize == nil && !needGroups {
		return a, nil // no hook to bound: no timer
	}
	actx, cancel := context.WithTimeout(ctx, ipamTimeout)
	defer cancel()
	if g.cfg.Authorize != nil {
		if err := g.cfg.Authorize(actx, res.Peer); err != nil {
			return nil, fmt.Errorf("gateway: agent %s: %w: %w", res.Peer.ID, handshake.ErrNotAuthorized, err)
		}
	}
	if needGroups {
		if a.groups, err = g.cfg.Policy.Groups(actx, res.Peer.ID); err != nil {
			return nil, fmt.Errorf("gateway: agent %s: groups: %w: %w", res.Peer.ID, handshake.ErrNotAuthorized, err)
		}
	}
	return a, nil
}

// finishEstablish establishes the session of a verified Finish (admitted
// already when a is set), or refuses it with an authenticated
// HandshakeError; either way the half-open handshake is done with.
func (g *Gateway) finishEstablish(ctx context.Context, idx uint32, ph *pendingHS, res *handshake.Result, j job, a *admission) {
	err := g.establish(ctx, idx, ph, res, j, a)
	if err != nil {
		// Refused after the Finish verified: tell the agent, authenticated
		// (busy, or not_authorized from the policy hook).
		g.refuse(idx, ph, res, j, err)
		return
	}
	ph.p.Zeroize()
}

// dropPending forgets a half-open handshake and zeroizes it.
func (g *Gateway) dropPending(idx uint32, ph *pendingHS) {
	g.table.Lock()
	if e := g.table.byIndex[idx]; e != nil && e.pending == ph {
		g.releasePendingLocked(idx, ph.src)
	}
	g.table.Unlock()
	ph.p.Zeroize()
}

// establish turns a verified Finish into a session and sends its
// SessionConfig as the first transport packet.
func (g *Gateway) establish(ctx context.Context, idx uint32, ph *pendingHS, res *handshake.Result, j job, a *admission) error {
	var err error
	if a == nil {
		if a, err = g.admit(ctx, res); err != nil {
			return err
		}
	}
	now := g.cfg.Now()
	serial, groups := a.serial, a.groups
	actx, cancel := context.WithTimeout(ctx, ipamTimeout)
	defer cancel()
	var addr, addr6 netip.Addr
	var err6 error
	done6 := make(chan struct{})
	if g.cfg.IPAM6 != nil && g.cfg.IPAM != nil {
		// Dual stack: the two pools are independent store round trips.
		go func() { addr6, err6 = g.cfg.IPAM6.Assign(actx, res.Peer.ID); close(done6) }()
	} else {
		if g.cfg.IPAM6 != nil {
			addr6, err6 = g.cfg.IPAM6.Assign(actx, res.Peer.ID)
		}
		close(done6)
	}
	if g.cfg.IPAM != nil {
		addr, err = g.cfg.IPAM.Assign(actx, res.Peer.ID)
	}
	<-done6
	if err != nil {
		return fmt.Errorf("gateway: tunnel address: %w: %w", handshake.ErrBusy, err)
	}
	if err6 != nil {
		return fmt.Errorf("gateway: IPv6 tunnel address: %w: %w", handshake.ErrBusy, err6)
	}
	// The address policy sees: IPv4 when the tunnel has it, else IPv6.
	primary := addr
	if !primary.IsValid() {
		primary = addr6
	}
	// From here the Result only serves rekeys: the agent's certificate and
	// public key (about 7.5 KB with ML-DSA-65) would otherwise live as long
	// as the session. The session keeps the agent id, serial and expiry.
	res.Peer.Leaf, res.Peer.PublicKey, res.Peer.Serial = nil, nil, nil
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, now)
	clear(res.SendKey[:])
	clear(res.RecvKey[:])
	if err != nil {
		return err
	}
	s := &session{id: pulse.ID(res.SessionID), agentID: res.Peer.ID, serial: serial, addr: addr, addr6: addr6,
		established: now, notAfter: res.Peer.NotAfter}
	s.keys.Store(&keySet{current: &keyState{res: res, kp: kp}})
	s.endpoint.Store(&epRef{ep: j.ep, addr: j.src})
	s.lastRecv.Store(now.UnixNano())
	s.lastSent.Store(now.UnixNano())
	token, err := g.tracker.Add(pulse.SessionInfo{ID: s.id, AgentID: s.agentID, CertSerial: serial, Established: now})
	if err != nil {
		kp.Zeroize()
		return fmt.Errorf("gateway: pulse tracker: %w: %w", handshake.ErrBusy, err)
	}
	if g.flows != nil {
		s.flow = g.flows.AddSession(flow.Subject{SessionID: s.id.String(), AgentID: s.agentID, Address: addr, Address6: addr6, Groups: groups}, s)
	}
	g.table.Lock()
	old := g.table.byAddr[primary]
	if old == nil && addr6.IsValid() {
		// The IPv6 address is the agent's too (its pool keys on the agent
		// id), so a session holding it is this agent's older one.
		old = g.table.byAddr[addr6]
	}
	if old == nil && len(g.table.byID) >= g.cfg.MaxSessions {
		g.table.Unlock()
		g.stats.Busy.Add(1)
		g.tracker.Remove(s.id)
		if g.flows != nil {
			g.flows.RemoveSession(s.flow)
		}
		kp.Zeroize()
		return fmt.Errorf("gateway: %d sessions: table full: %w", g.cfg.MaxSessions, handshake.ErrBusy)
	}
	// The half-open handshake's index becomes the session's first keypair's.
	g.releasePendingCountLocked(ph.src)
	delete(g.table.pendings, idx)
	g.table.byIndex[idx] = &indexEntry{sess: s}
	for _, a := range [...]netip.Addr{addr, addr6} {
		if a.IsValid() {
			g.table.byAddr[a] = s
		}
	}
	g.table.byID[s.id] = s
	g.table.Unlock()
	s.timer.v = s
	g.schedule(s, g.nextDue(s, now))
	if old != nil {
		g.stats.SessionsReplaced.Add(1)
		g.endSession(old, control.CloseReplaced, "replaced by a newer session", true)
	}
	g.stats.SessionsEstablished.Add(1)
	g.cfg.Logger.Info("session established", "session", s.id.String(), "agent", s.agentID, "address", addr, "address6", addr6,
		"endpoint", j.src.String())

	cfg := &control.SessionConfig{
		Addresses:     g.tunnelAddresses(addr, addr6),
		Routes:        g.tunnelRoutes(),
		MTU:           uint16(g.cfg.MTU),
		PulseInterval: g.cfg.PulseInterval,
		SessionToken:  token,
	}
	if tok, err := g.cookies.IssueToken(j.src.Addr(), now); err == nil {
		cfg.AddressToken = tok
	}
	g.sendControl(s, cfg, now)
	return nil
}

// peerSerial returns the leaf certificate's serial in the form
// pulse.NormalizeSerial gives: the verifier's, or from the leaf when the
// verifier did not say.
func peerSerial(p handshake.Peer) (string, error) {
	serial := p.Serial
	if serial == nil {
		c, err := pqx509.ParseCertificate(p.Leaf)
		if err != nil {
			return "", fmt.Errorf("gateway: agent leaf certificate: %w", err)
		}
		serial = c.SerialNumber
	}
	s := pulse.NormalizeSerial(fmt.Sprintf("%x", serial))
	if s == "" {
		return "", fmt.Errorf("gateway: agent leaf serial %x not usable", serial)
	}
	return s, nil
}

// doRekey answers a RekeyInit and installs the new keypair as "next": it
// sends once the agent used it (promote), so a lost RekeyResp costs
// nothing.
func (g *Gateway) doRekey(j job) {
	idx := binary.BigEndian.Uint32(j.b[8:])
	g.table.RLock()
	e := g.table.byIndex[idx]
	g.table.RUnlock()
	if e == nil || e.sess == nil {
		g.stats.DropNoSession.Add(1)
		return
	}
	s := e.sess
	newIdx, _, ok := g.reserveIndex(netip.AddrPort{}, false)
	if !ok {
		g.stats.Busy.Add(1)
		return
	}
	resp, ok := g.rekey(s, idx, newIdx, j)
	if !ok {
		g.table.Lock()
		if e := g.table.byIndex[newIdx]; e != nil && e.sess == nil && e.pending == nil {
			delete(g.table.byIndex, newIdx)
		}
		g.table.Unlock()
		g.stats.RekeyRefused.Add(1)
		return
	}
	g.stats.Rekeys.Add(1)
	s.rekeys.Add(1)
	g.send(j.ep, resp)
}

func (g *Gateway) rekey(s *session, idx, newIdx uint32, j job) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.Load() {
		return nil, false
	}
	ks := s.keys.Load()
	k := ks.find(idx)
	if k == nil || (k != ks.current && k != ks.next) {
		return nil, false
	}
	resp, res, err := handshake.HandleRekeyInit(k.res, j.b, g.cfg.Rand, g.cfg.Now, newIdx)
	if err != nil {
		g.cfg.Logger.Debug("rekey refused", "session", s.id.String(), "error", err)
		return nil, false
	}
	now := g.cfg.Now()
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, now)
	clear(res.SendKey[:])
	clear(res.RecvKey[:])
	if err != nil {
		res.Zeroize()
		return nil, false
	}
	next := &keyState{res: res, kp: kp}
	nks := &keySet{current: ks.current, next: next, previous: ks.previous, prevUntil: ks.prevUntil}
	if k == ks.next {
		// The agent rekeys from keys we never saw it use: they are its
		// current ones now.
		if ks.previous != nil {
			g.retireLocked(s, ks.previous)
		}
		nks.previous, nks.prevUntil = ks.current, now.Add(OldKeyLifetime)
		nks.current = k
	} else if ks.next != nil {
		// A retry after a lost RekeyResp: the unconfirmed keys go.
		g.retireLocked(s, ks.next)
	}
	g.table.Lock()
	g.table.byIndex[newIdx] = &indexEntry{sess: s}
	g.table.Unlock()
	s.keys.Store(nks)
	if j.src.IsValid() {
		s.endpoint.Store(&epRef{ep: j.ep, addr: j.src})
	}
	return resp, true
}

// tunnelAddresses returns a session's addresses as host prefixes for its
// SessionConfig: IPv4 first, then IPv6, each when the tunnel has it.
func (g *Gateway) tunnelAddresses(addr, addr6 netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, 2)
	for _, a := range [...]netip.Addr{addr, addr6} {
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// tunnelRoutes returns the routes of every SessionConfig: the tunnel
// prefixes (agent-to-agent traffic goes through the gateway), then Routes.
func (g *Gateway) tunnelRoutes() []netip.Prefix {
	out := make([]netip.Prefix, 0, 2+len(g.cfg.Routes))
	for _, p := range [...]netip.Prefix{g.cfg.TunnelPrefix, g.cfg.TunnelPrefix6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return append(out, g.cfg.Routes...)
}
