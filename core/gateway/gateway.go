package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/ratelimit"
)

// Gateway is the engine: UDP datagrams from the bind, sessions, and the TUN
// device. See the package documentation for the data path and the locks.
type Gateway struct {
	// Fixed after New; safe to read without a lock. The components guard
	// their own state.
	cfg       Config
	dev       tun.Device
	bind      conn.Bind
	responder *handshake.Responder
	cookies   *cookie.Checker
	limiter   *ratelimit.Limiter
	load      *ratelimit.Load
	reasm     *frag.Reassembler
	tracker   *pulse.Tracker
	stats     Stats
	jobs      chan job
	// flows enforces policy per flow; nil when Policy.Mode is off.
	flows *flow.Enforcer
	// connects carries connect decisions of verified handshakes back to
	// the workers (connect.go); one per half-open handshake at most, so
	// its capacity, MaxPending, is never exceeded.
	connects chan connected

	// table guards the index, address and id maps and the pending
	// counters. Lock order: session.mu before table, never the reverse.
	table struct {
		sync.RWMutex
		byIndex      map[uint32]*indexEntry
		byAddr       map[netip.Addr]*session
		byID         map[pulse.ID]*session
		pendings     map[uint32]*pendingHS
		pendingBySrc map[netip.AddrPort]int
		pending      int // reserved and half-open handshakes
	}

	// life guards the lifecycle.
	life struct {
		sync.Mutex
		started, closed bool
		cancel          context.CancelFunc
		done            chan struct{}
		err             error
	}
	wg sync.WaitGroup

	// timers guards the timer wheel of the sessions (session.timer) and
	// the limiter's last sweep. It is a leaf lock: nothing is called and
	// no other lock taken while it is held.
	timers struct {
		sync.Mutex
		w         *timerWheel[*session]
		buf       []*session // due sessions of the last tick, reused
		lastSweep time.Time
	}
}

// jobKind is the kind of a handshake job.
type jobKind uint8

const (
	jobInitiation jobKind = iota + 1
	jobFinish
	jobRekey
)

// job is a proven handshake message for the workers.
type job struct {
	kind jobKind
	b    []byte
	src  netip.AddrPort
	ep   conn.Endpoint
}

// New validates cfg and builds a gateway over dev and bind, which it owns
// from now on (Close closes them). Nothing runs until Start or Run. The
// bind's Send must keep none of its buffers once it returns: the gateway
// reuses them (bufpool.go).
func New(cfg Config, dev tun.Device, bind conn.Bind) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if dev == nil || bind == nil {
		return nil, fmt.Errorf("gateway: a tun device and a bind are required: %w", ErrConfig)
	}
	g := &Gateway{cfg: cfg, dev: dev, bind: bind, jobs: make(chan job, cfg.QueueLen)}
	if cfg.Policy.Mode == PolicyEnforce {
		g.connects = make(chan connected, cfg.MaxPending)
		if g.cfg.Policy.GatewayID == "" {
			g.cfg.Policy.GatewayID = DefaultGatewayID
		}
	}
	if g.responder, err = handshake.NewResponder(handshake.ResponderConfig{Signer: cfg.Signer, Verifier: cfg.Verifier,
		Rand: cfg.Rand, Now: cfg.Now, MaxSkew: cfg.MaxSkew, Delegated: cfg.Delegated}); err != nil {
		return nil, fmt.Errorf("gateway: responder: %w: %w", ErrConfig, err)
	}
	if g.cookies, err = cookie.NewChecker(g.responder.ID(), cfg.Rand, cfg.Now()); err != nil {
		return nil, fmt.Errorf("gateway: cookie checker: %w: %w", ErrConfig, err)
	}
	if g.limiter, err = ratelimit.New(ratelimit.Config{PerSecond: cfg.HandshakeRate, Burst: cfg.HandshakeBurst}); err != nil {
		return nil, fmt.Errorf("gateway: rate limiter: %w: %w", ErrConfig, err)
	}
	if g.load, err = ratelimit.NewLoad(ratelimit.LoadConfig{Threshold: cfg.LoadThreshold}); err != nil {
		return nil, fmt.Errorf("gateway: load detector: %w: %w", ErrConfig, err)
	}
	if g.reasm, err = frag.NewReassembler(frag.Config{}); err != nil {
		return nil, fmt.Errorf("gateway: reassembler: %w: %w", ErrConfig, err)
	}
	if g.tracker, err = pulse.New(pulse.Config{Interval: cfg.PulseInterval, Missed: cfg.MissedPulses, MaxSkew: cfg.MaxSkew}, cfg.Rand); err != nil {
		g.cookies.Close()
		return nil, fmt.Errorf("gateway: pulse tracker: %w: %w", ErrConfig, err)
	}
	g.table.byIndex = map[uint32]*indexEntry{}
	g.table.byAddr = map[netip.Addr]*session{}
	g.table.byID = map[pulse.ID]*session{}
	g.table.pendingBySrc = map[netip.AddrPort]int{}
	g.table.pendings = map[uint32]*pendingHS{}
	g.timers.w = newTimerWheel[*session](TickInterval, timerBuckets, cfg.Now())
	if g.cfg.Policy.Mode == PolicyEnforce {
		if g.flows, err = g.newEnforcer(); err != nil {
			g.cookies.Close()
			g.tracker.Close()
			return nil, err
		}
	}
	return g, nil
}

// ResponderID is the gateway's responder_id (agents learn it at
// enrollment).
func (g *Gateway) ResponderID() [handshake.IDLen]byte { return g.responder.ID() }

// Tracker is the pulse tracker of the live sessions, for
// pulse.Revocations (with the Gateway as its Terminator).
func (g *Gateway) Tracker() *pulse.Tracker { return g.tracker }

// Stats returns the live counters (read them with Load).
func (g *Gateway) Stats() *Stats { return &g.stats }

// Start opens the bind on the configured port and starts every goroutine
// of the engine: one receive loop per bind ReceiveFunc, the TUN read loop,
// the timer loop and the handshake workers. It returns once they run;
// they stop when ctx ends or Close is called. The bind's sockets are
// created on the calling goroutine (network namespace tests rely on it).
func (g *Gateway) Start(ctx context.Context) error {
	g.life.Lock()
	defer g.life.Unlock()
	if g.life.closed {
		return ErrClosed
	}
	if g.life.started {
		return ErrStarted
	}
	fns, _, err := g.bind.Open(g.cfg.Listen.Port())
	if err != nil {
		return fmt.Errorf("gateway: port %d: %w: %w", g.cfg.Listen.Port(), ErrBind, err)
	}
	g.life.started = true
	ctx, cancel := context.WithCancel(ctx)
	g.life.cancel = cancel
	g.life.done = make(chan struct{})
	for _, fn := range fns {
		g.wg.Go(func() { g.receiveLoop(ctx, fn) })
	}
	g.wg.Go(func() { g.tunReadLoop(ctx) })
	g.wg.Go(func() { g.timerLoop(ctx) })
	for range g.cfg.Workers {
		g.wg.Go(func() { g.worker(ctx) })
	}
	done := g.life.done
	go func() {
		// Owner of the shutdown: ends the blocking reads so that every
		// loop above returns, then reports done.
		<-ctx.Done()
		g.sendCloseAll(control.CloseShutdown, "gateway shutting down")
		_ = g.bind.Close()
		_ = g.dev.Close()
		g.wg.Wait()
		close(done)
	}()
	return nil
}

// Run is Start, then waits until ctx ends, Close is called or the TUN
// device fails; it returns nil or the failure (ErrDevice).
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.Start(ctx); err != nil {
		return err
	}
	g.life.Lock()
	done := g.life.done
	g.life.Unlock()
	<-done
	g.life.Lock()
	defer g.life.Unlock()
	return g.life.err
}

// Err returns the failure that stopped the engine (ErrDevice), nil while
// it runs or after a clean stop; for readiness checks.
func (g *Gateway) Err() error {
	g.life.Lock()
	defer g.life.Unlock()
	return g.life.err
}

// fail records a fatal error and stops the engine.
func (g *Gateway) fail(err error) {
	g.life.Lock()
	if g.life.err == nil {
		g.life.err = err
	}
	cancel := g.life.cancel
	g.life.Unlock()
	g.cfg.Logger.Error("gateway stopping", "error", err)
	if cancel != nil {
		cancel()
	}
}

// Close stops the engine (agents get a Close), waits for every goroutine,
// closes the bind and the TUN device and zeroizes every key. It may be
// called more than once.
func (g *Gateway) Close() error {
	g.life.Lock()
	if g.life.closed {
		g.life.Unlock()
		return nil
	}
	g.life.closed = true
	cancel, done, started := g.life.cancel, g.life.done, g.life.started
	g.life.Unlock()
	if started {
		cancel()
		<-done
	} else {
		_ = g.bind.Close()
		_ = g.dev.Close()
	}
	// Every goroutine is gone: clear what is left.
	g.table.Lock()
	var sessions []*session
	for _, s := range g.table.byID {
		sessions = append(sessions, s)
	}
	var pendings []*pendingHS
	for _, ph := range g.table.pendings {
		pendings = append(pendings, ph)
	}
	g.table.Unlock()
	for _, s := range sessions {
		g.endSession(s, 0, "", false)
	}
	for _, p := range pendings {
		p.p.Zeroize()
	}
	g.cookies.Close()
	g.tracker.Close()
	if g.flows != nil {
		g.flows.Close()
		g.drainConnects()
	}
	return nil
}

// Sessions lists the live sessions.
func (g *Gateway) Sessions() []SessionInfo {
	g.table.RLock()
	out := make([]SessionInfo, 0, len(g.table.byID))
	for _, s := range g.table.byID {
		out = append(out, s.info())
	}
	g.table.RUnlock()
	return out
}

// Terminate ends session id: the agent gets a Close (control.CloseKilled)
// with reason, the keys are zeroized and the session is forgotten. It is
// the pulse.Terminator of pulse.Revocations and the operator's kill; it is
// idempotent and ignores unknown ids.
func (g *Gateway) Terminate(id pulse.ID, reason string) {
	g.table.RLock()
	s := g.table.byID[id]
	g.table.RUnlock()
	if s == nil {
		g.tracker.Remove(id)
		return
	}
	g.endSession(s, control.CloseKilled, reason, true)
}

// TerminateAgent ends every session of agentID (control.CloseRevoked:
// the agent was disabled) and returns how many it ended.
func (g *Gateway) TerminateAgent(agentID, reason string) int {
	return g.terminateWhere(func(s *session) bool { return s.agentID == agentID }, control.CloseRevoked, reason)
}

// TerminateSerial ends every session authenticated with the certificate
// of this serial (hex, compared after pulse.NormalizeSerial;
// control.CloseRevoked) and returns how many it ended.
func (g *Gateway) TerminateSerial(serial, reason string) int {
	n := pulse.NormalizeSerial(serial)
	if n == "" {
		return 0
	}
	return g.terminateWhere(func(s *session) bool { return s.serial == n }, control.CloseRevoked, reason)
}

func (g *Gateway) terminateWhere(match func(*session) bool, code uint16, reason string) int {
	g.table.RLock()
	var hit []*session
	for _, s := range g.table.byID {
		if match(s) {
			hit = append(hit, s)
		}
	}
	g.table.RUnlock()
	n := 0
	for _, s := range hit {
		if g.endSession(s, code, reason, true) {
			n++
		}
	}
	return n
}

// endSession removes s from every table and the tracker, sends a Close when
// send is set, and zeroizes its keys. It reports whether this call ended
// it (false when it had already ended).
func (g *Gateway) endSession(s *session, code uint16, reason string, send bool) bool {
	if !s.ended.CompareAndSwap(false, true) {
		return false
	}
	g.unschedule(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys.Load()
	g.table.Lock()
	for _, idx := range ks.indexes() {
		if e := g.table.byIndex[idx]; e != nil && e.sess == s {
			delete(g.table.byIndex, idx)
		}
	}
	for _, a := range [...]netip.Addr{s.addr, s.addr6} {
		if a.IsValid() && g.table.byAddr[a] == s {
			delete(g.table.byAddr, a)
		}
	}
	if g.table.byID[s.id] == s {
		delete(g.table.byID, s.id)
	}
	g.table.Unlock()
	g.tracker.Remove(s.id)
	if g.flows != nil {
		g.flows.RemoveSession(s.flow)
	}
	// Counted before the Close goes out, so whoever sees the Close sees
	// the count.
	g.stats.SessionsEnded.Add(1)
	if send {
		if len(reason) > control.MaxReason {
			reason = reason[:control.MaxReason]
			for len(reason) > 0 && !utf8.ValidString(reason) {
				reason = reason[:len(reason)-1]
			}
		}
		g.sendControl(s, &control.Close{Code: code, Reason: reason}, g.cfg.Now())
	}
	s.zeroizeLocked()
	g.cfg.Logger.Info("session ended", "session", s.id.String(), "agent", s.agentID, "code", code, "reason", reason)
	return true
}

// sendCloseAll tells every agent the gateway goes away.
func (g *Gateway) sendCloseAll(code uint16, reason string) {
	g.table.RLock()
	var all []*session
	for _, s := range g.table.byID {
		all = append(all, s)
	}
	g.table.RUnlock()
	now := g.cfg.Now()
	for _, s := range all {
		g.sendControl(s, &control.Close{Code: code, Reason: reason}, now)
	}
}

// send sends bufs to ep in chunks of the bind's batch size.
func (g *Gateway) send(ep conn.Endpoint, bufs ...[]byte) {
	batch := max(g.bind.BatchSize(), 1)
	for len(bufs) > 0 {
		n := min(len(bufs), batch)
		if err := g.bind.Send(bufs[:n], ep); err != nil {
			g.stats.SendErrors.Add(uint64(n))
			if !errors.Is(err, net.ErrClosed) {
				g.cfg.Logger.Debug("send failed", "endpoint", ep.DstToString(), "error", err)
			}
		}
		bufs = bufs[n:]
	}
}

// sendControl seals m with s's current keypair and sends it.
func (g *Gateway) sendControl(s *session, m control.Message, now time.Time) bool {
	pooled := ctlBufs.get(16)
	defer func() {
		// Sealed in place, unless sealAndSend refused: then the plaintext
		// (a session token, say) is still there.
		clear(pooled[:cap(pooled)])
		ctlBufs.put(pooled)
	}()
	buf, err := control.Append(pooled, m)
	if err != nil {
		g.cfg.Logger.Error("control message not encodable", "type", m.Type().String(), "error", err)
		return false
	}
	return g.sealAndSend(s, buf, now)
}

// sealAndSend seals buf[16:] (a plaintext after 16 bytes of room) in place
// with s's current keypair and sends it to s's endpoint.
func (g *Gateway) sealAndSend(s *session, buf []byte, now time.Time) bool {
	ks := s.keys.Load()
	ep := s.endpoint.Load()
	if ks == nil || ks.current == nil || ep == nil || ks.current.kp.Expired(now) {
		return false
	}
	pt := buf[16:]
	out, err := ks.current.kp.Seal(buf[:0], pt)
	if err != nil {
		return false
	}
	s.txBytes.Add(uint64(len(pt)))
	s.lastSent.Store(now.UnixNano())
	g.send(ep.ep, out)
	return true
}

// addrOf returns the address and port an endpoint names (IPv4-mapped
// addresses unmapped).
func addrOf(ep conn.Endpoint) netip.AddrPort {
	type addrPorter interface {
		Addr() netip.Addr
		Port() uint16
	}
	if a, ok := ep.(addrPorter); ok {
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	ap, err := netip.ParseAddrPort(ep.DstToString())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// randUint32 draws a random uint32 from the configured source.
func (g *Gateway) randUint32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(g.cfg.Rand, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// isClosed reports whether err means the device or bind was closed.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF)
}
