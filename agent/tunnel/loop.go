package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
)

const (
	// fragmentChunk is the payload size of our Finish fragments.
	fragmentChunk = frag.DefaultMaxChunk
	// maxCookieReplies bounds the Initiation resends one attempt makes for
	// cookie replies (a gateway over its budget keeps sending them).
	maxCookieReplies = 4
)

// session is the main loop's state of one established session.
type session struct {
	config    control.SessionConfig
	interval  time.Duration
	token     [control.TokenLen]byte
	seq       uint64 // last pulse sent
	acked     uint64 // last pulse acknowledged
	nextPulse time.Time
	rekey     *handshake.RekeyInitiator
	rekeySent time.Time
	prevUntil time.Time // when the keys a rekey replaced are dropped
	factsErr  bool
	started   time.Time // when the session was configured (MaxSessionAge)
	// rehand is the reason of a wanted re-handshake ("" for none); after
	// a failed attempt the next waits until retryAt.
	rehand  string
	retryAt time.Time
	retries int
}

func (s *session) zeroize() {
	clear(s.token[:])
	if s.rekey != nil {
		s.rekey.Zeroize()
		s.rekey = nil
	}
}

// loop runs handshakes and sessions until ctx ends.
func (e *Engine) loop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		e.setState(StateConnecting, time.Time{})
		// A fresh handshake consults the credentials anyway: a
		// Rehandshake asked for before it is moot.
		select {
		case <-e.rehandCh:
		default:
		}
		s, err := e.handshake(ctx, false)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			attempt = 0
			err = e.runSession(ctx, s)
			if ctx.Err() != nil {
				return
			}
		}
		e.fail(err)
		d := e.backoff(attempt)
		attempt++
		e.setState(StateBackoff, time.Now().Add(d).UTC())
		e.wait(ctx, d)
	}
}

// backoff is the jittered exponential backoff before attempt n+1: a
// uniform duration in [d/2, d] with d = BackoffMin * 2^n, at most
// BackoffMax.
func (e *Engine) backoff(n int) time.Duration {
	t := e.cfg.Timers
	d := t.BackoffMax
	if n < 30 && t.BackoffMin<<n < t.BackoffMax {
		d = t.BackoffMin << n
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(uint64(e.randUint32())*uint64(half)>>32)
}

// wait sleeps d, reopening the bind when asked and discarding datagrams.
func (e *Engine) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-e.inbox:
		case <-e.rebindCh:
			e.doRebind()
		}
	}
}

func (e *Engine) doRebind() {
	if err := e.rebind(); err != nil {
		e.fail(err)
	}
}

// handshake runs one attempt: Initiation (again with mac2 after a cookie
// reply), Response, Finish, then the gateway's SessionConfig. On success
// the session's keys are installed. With keep (a re-handshake during a
// session) the current keys stay installed until the Response, then
// become the previous keys; if the attempt fails before the Response they
// are untouched, after it every key is dropped.
func (e *Engine) handshake(ctx context.Context, keep bool) (*session, error) {
	signer, chain := e.cfg.Signer, e.cfg.Chain
	if e.cfg.Credentials != nil {
		var err error
		if signer, chain, err = e.cfg.Credentials(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
		}
		if signer == nil || len(chain) == 0 {
			return nil, fmt.Errorf("%w: no signer or certificate chain", ErrCredentials)
		}
	}
	idx := e.randUint32()
	if e.cred == nil {
		e.cred = loadCredential(e.cfg.StateDir, e.cfg.GatewayPublicKey, e.cfg.Now())
	}
	in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: signer, Chain: chain,
		ResponderPublicKey: e.cfg.GatewayPublicKey, ResponderID: e.rid, AEAD: e.cfg.AEAD, Rand: e.cfg.Rand,
		Now: e.cfg.Now, LocalIndex: idx, Credential: e.cred})
	if err != nil {
		return nil, err
	}
	defer in.Zeroize()
	gw := e.cfg.Gateway.String()
	msg, err := in.Initiation(loadToken(e.cfg.StateDir, gw, e.cfg.Now()))
	if err != nil {
		return nil, err
	}
	var ck cookie.Cookie
	if err := cookie.AddMACs(msg, e.rid, &ck, time.Now()); err != nil {
		return nil, err
	}
	if err := e.sendOne(msg); err != nil {
		e.log.Debug("send initiation", "error", err)
	}
	reasm, err := frag.NewReassembler(frag.Config{PerSource: 1, Global: 1, Timeout: e.cfg.Timers.HandshakeTimeout})
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(e.cfg.Timers.HandshakeTimeout)
	defer timer.Stop()
	var (
		s       *session
		hint    error
		cookies int
	)
	abort := func(err error) (*session, error) {
		if s != nil {
			e.dropKeys()
		}
		return nil, err
	}
	for {
		select {
		case <-ctx.Done():
			return abort(ctx.Err())
		case <-e.rebindCh:
			e.doRebind()
		case <-timer.C:
			if hint != nil {
				return abort(hint)
			}
			if s != nil {
				return abort(fmt.Errorf("%w: no session config after the handshake", ErrNoAnswer))
			}
			return abort(fmt.Errorf("%w: no handshake response from %s within %s", ErrNoAnswer, gw, e.cfg.Timers.HandshakeTimeout))
		case m := <-e.inbox:
			switch handshake.MessageType(m.typ) {
			case handshake.TypeCookieReply:
				if s != nil || cookies >= maxCookieReplies {
					continue
				}
				if r, err := cookie.ReplyReceiver(m.b); err != nil || r != idx {
					continue
				}
				mac1, _ := cookie.MAC1(msg)
				c, err := cookie.OpenReply(m.b, e.rid, mac1, time.Now())
				if err != nil {
					e.log.Debug("cookie reply refused", "error", err)
					continue
				}
				cookies++
				ck = c
				if err := cookie.AddMACs(msg, e.rid, &ck, time.Now()); err == nil {
					e.log.Debug("cookie reply: initiation sent again with mac2")
					_ = e.sendOne(msg)
				}
			case handshake.TypeFragment:
				if s != nil {
					continue
				}
				full, done, err := reasm.Add(e.cfg.Gateway, m.b, time.Now())
				if err != nil || !done || len(full) == 0 || handshake.MessageType(full[0]) != handshake.TypeResponse {
					continue
				}
				finish, res, err := in.HandleResponse(full)
				if err != nil {
					e.log.Debug("response refused", "error", err)
					continue
				}
				e.keepCredential(res.Credential)
				if keep {
					e.prev.Swap(e.installKeys(res)).zeroize()
				} else {
					e.dropKeys()
					e.installKeys(res)
				}
				e.lastRecv.Store(e.mono())
				s = &session{}
				frags, err := frag.SplitForGSO(finish, e.randUint32(), fragmentChunk)
				if err != nil {
					return abort(err)
				}
				if err := e.send(frags); err != nil {
					e.log.Debug("send finish", "error", err)
				}
				timer.Reset(e.cfg.Timers.HandshakeTimeout)
			case handshake.TypeHandshakeError:
				info, err := in.HandleError(m.b)
				if err != nil {
					continue
				}
				herr := e.handshakeError(info)
				if info.Authenticated {
					return abort(herr)
				}
				// A hint anyone could have sent: show it, keep waiting.
				hint = herr
				e.fail(herr)
			case 0:
				if s == nil || m.k == nil || m.k != e.cur.Load() {
					continue // not yet, or the old session's
				}
				cm, err := control.Parse(m.b)
				if err != nil {
					continue
				}
				switch v := cm.(type) {
				case *control.SessionConfig:
					s.config = *v
					e.mu.Lock()
					e.status.Handshakes++
					e.status.LastHandshake = time.Now().UTC()
					e.mu.Unlock()
					return s, nil
				case *control.Close:
					return abort(closeError(v))
				}
			}
		}
	}
}

// closeError is the error of a Close from the gateway: for a connect
// denial "connect denied: <reason> (policy <ids>)", what `avon-agent
// status` shows.
func closeError(v *control.Close) error {
	if v.Code == control.CloseConnectDenied {
		return fmt.Errorf("%w: %s", ErrConnectDenied, v.Reason)
	}
	return fmt.Errorf("%w: code %d: %s", ErrClosed, v.Code, v.Reason)
}

// handshakeError turns a HandshakeError into the error shown to the user.
func (e *Engine) handshakeError(info *handshake.HandshakeErrorInfo) error {
	how := "authenticated"
	if !info.Authenticated {
		how = "unauthenticated hint"
	}
	if info.Code == handshake.CodeClockSkew && !info.ResponderTime.IsZero() {
		d := info.ResponderTime.Sub(e.cfg.Now())
		dir := "behind"
		if d < 0 {
			d, dir = -d, "ahead of"
		}
		e.mu.Lock()
		e.status.ServerTimeOffset = info.ResponderTime.Sub(e.cfg.Now()).Round(time.Millisecond).String()
		e.mu.Unlock()
		return fmt.Errorf("%w: our clock is %s %s the gateway's (gateway time %s; %s)", ErrClockSkew,
			d.Round(time.Millisecond), dir, info.ResponderTime.UTC().Format(time.RFC3339Nano), how)
	}
	detail := ""
	if len(info.Detail) > 0 && info.Code != handshake.CodeClockSkew {
		detail = ": " + truncate(string(info.Detail), handshake.MaxErrorDetail)
	}
	return fmt.Errorf("%w: %s%s (%s)", ErrRefused, info.Code, detail, how)
}

// installKeys makes res the current session keys and returns the keys it
// replaced (the caller keeps or zeroizes them). res keeps only its rekey
// secret.
func (e *Engine) installKeys(res *handshake.Result) *keys {
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, time.Now())
	clear(res.SendKey[:])
	clear(res.RecvKey[:])
	if err != nil {
		e.log.Error("session keys refused", "error", err)
		res.Zeroize()
		return nil
	}
	return e.cur.Swap(&keys{kp: kp, res: res})
}

// dropKeys zeroizes every installed key.
func (e *Engine) dropKeys() {
	e.cur.Swap(nil).zeroize()
	e.prev.Swap(nil).zeroize()
	e.addrs.Store(nil)
}

// sendControl seals a control message with the current keys and sends it.
func (e *Engine) sendControl(m control.Message) error {
	b, err := control.Marshal(m)
	if err != nil {
		return err
	}
	return e.sendPlain(b)
}

func (e *Engine) sendPlain(b []byte) error { return e.sendPlainWith(e.cur.Load(), b) }

// sendPlainWith seals b with k and sends it.
func (e *Engine) sendPlainWith(k *keys, b []byte) error {
	if k == nil {
		return fmt.Errorf("no session keys: %w", transport.ErrClosed)
	}
	p, err := k.kp.Seal(make([]byte, 0, transport.HeaderSize+len(b)+2*transport.TagSize), b)
	if err != nil {
		return err
	}
	return e.sendOne(p)
}

func (e *Engine) sendClose(code uint16, reason string) {
	if err := e.sendControl(&control.Close{Code: code, Reason: reason}); err != nil {
		e.log.Debug("send close", "error", err)
	}
}

// runSession applies the session config and keeps the session alive until
// it ends; it returns why.
func (e *Engine) runSession(ctx context.Context, s *session) error {
	end := func(err error) error {
		e.dropKeys()
		s.zeroize()
		return err
	}
	if err := e.applyConfig(s, &s.config); err != nil {
		e.sendClose(control.CloseShutdown, "session config not applied")
		return end(err)
	}
	s.started = time.Now()
	e.setState(StateUp, time.Time{})
	e.log.Info("tunnel up", "gateway", e.cfg.Gateway, "addresses", s.config.Addresses)
	tick := time.NewTicker(e.cfg.Timers.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			e.sendClose(control.CloseShutdown, "agent stopped")
			return end(ctx.Err())
		case <-e.rebindCh:
			e.doRebind()
			_ = e.sendPlain(nil) // the gateway learns the new address
		case <-e.rehandCh:
			e.mu.Lock()
			s.rehand = e.rehandWhy
			e.mu.Unlock()
			s.retryAt, s.retries = time.Time{}, 0
		case m := <-e.inbox:
			if err := e.sessionMessage(s, m); err != nil {
				return end(err)
			}
		case <-tick.C:
			now := time.Now()
			if err := e.sessionTick(s, now); err != nil {
				return end(err)
			}
			if age := now.Sub(s.started); s.rehand == "" && age >= e.cfg.Timers.MaxSessionAge {
				s.rehand = "session age " + age.Round(time.Second).String()
			}
		}
		if s.rehand == "" || time.Now().Before(s.retryAt) {
			continue
		}
		ns, err := e.replaceSession(ctx, s)
		if err == nil {
			s.zeroize()
			s = ns
		}
		switch {
		case ctx.Err() != nil:
			e.sendClose(control.CloseShutdown, "agent stopped")
			return end(ctx.Err())
		case err == nil:
		case ns == nil:
			return end(err)
		default: // the old session goes on; try again later
			e.fail(err)
			s.retryAt = time.Now().Add(e.backoff(s.retries))
			s.retries++
		}
	}
}

// replaceSession runs a full handshake while s carries traffic, then
// closes s at the gateway and applies the new session's config. It
// returns the new session, or: an error and s when the attempt failed
// before touching the keys (s goes on), or an error and nil when s is
// lost too (its keys are dropped).
func (e *Engine) replaceSession(ctx context.Context, s *session) (*session, error) {
	reason := s.rehand
	old := e.cur.Load()
	e.log.Info("re-handshake", "reason", reason)
	ns, err := e.handshake(ctx, true)
	if err != nil {
		err = fmt.Errorf("re-handshake (%s): %w", reason, err)
		if old != nil && e.cur.Load() == old {
			return s, err
		}
		return nil, err
	}
	// The old keys are the previous ones now: close the old session with
	// them, and keep them a little for packets in flight.
	if err := e.sendControlWith(old, &control.Close{Code: control.CloseShutdown, Reason: "replaced by a new handshake"}); err != nil {
		e.log.Debug("send close of the old session", "error", err)
	}
	ns.prevUntil = time.Now().Add(e.cfg.Timers.OldKeys)
	ns.factsErr = s.factsErr
	if err := e.applyConfig(ns, &ns.config); err != nil {
		e.sendClose(control.CloseShutdown, "session config not applied")
		ns.zeroize()
		return nil, err
	}
	ns.started = time.Now()
	e.mu.Lock()
	e.status.Rehandshakes++
	e.status.RehandshakeReason = reason
	e.status.LastRehandshake = ns.started.UTC()
	e.mu.Unlock()
	e.kickStatus()
	e.log.Info("session replaced", "reason", reason, "addresses", ns.config.Addresses)
	return ns, nil
}

// sendControlWith seals a control message with k and sends it.
func (e *Engine) sendControlWith(k *keys, m control.Message) error {
	b, err := control.Marshal(m)
	if err != nil {
		return err
	}
	return e.sendPlainWith(k, b)
}

// applyConfig takes a SessionConfig: MTU clamped to Config.MTU, the
// addresses for the inbound check, the hook, the tokens, the status.
// Clamped below IPv6's minimum link MTU (1280) the tunnel cannot carry
// IPv6, so its IPv6 addresses and routes are left out (with a warning)
// rather than refused by the kernel.
func (e *Engine) applyConfig(s *session, sc *control.SessionConfig) error {
	if int(sc.MTU) > e.cfg.MTU {
		sc.MTU = uint16(e.cfg.MTU)
	}
	if sc.MTU < control.MinMTUv6 {
		is6 := func(p netip.Prefix) bool { return p.Addr().Is6() && !p.Addr().Is4In6() }
		if slices.ContainsFunc(sc.Addresses, is6) {
			e.log.Warn("tunnel MTU below 1280: IPv6 left out of the tunnel", "mtu", sc.MTU)
			sc.Addresses = slices.DeleteFunc(slices.Clone(sc.Addresses), is6)
			sc.Routes = slices.DeleteFunc(slices.Clone(sc.Routes), is6)
			if len(sc.Addresses) == 0 {
				return fmt.Errorf("%w: the gateway assigned only IPv6 addresses and the tunnel MTU %d is below IPv6's 1280", ErrOnConfig, sc.MTU)
			}
		}
	}
	if e.cfg.OnConfig != nil {
		if err := e.cfg.OnConfig(*sc); err != nil {
			return fmt.Errorf("%w: %w", ErrOnConfig, err)
		}
	}
	addrs := make([]netip.Addr, 0, len(sc.Addresses))
	st := Status{}
	for _, a := range sc.Addresses {
		addrs = append(addrs, a.Addr().Unmap())
		st.Addresses = append(st.Addresses, a.String())
	}
	for _, r := range sc.Routes {
		st.Routes = append(st.Routes, r.String())
	}
	e.addrs.Store(&addrs)
	s.config = *sc
	s.interval = sc.PulseInterval
	s.token = sc.SessionToken
	s.nextPulse = time.Now()
	if len(sc.AddressToken) > 0 {
		if err := saveToken(e.cfg.StateDir, e.cfg.Gateway.String(), sc.AddressToken, e.cfg.Now()); err != nil {
			e.log.Warn("address token not saved", "error", err)
		}
	}
	e.mu.Lock()
	e.status.Addresses, e.status.Routes = st.Addresses, st.Routes
	e.status.MTU = int(sc.MTU)
	e.status.PulseInterval = sc.PulseInterval.String()
	e.mu.Unlock()
	return nil
}

// sessionMessage handles a datagram or control message during a session.
func (e *Engine) sessionMessage(s *session, m inbound) error {
	switch handshake.MessageType(m.typ) {
	case 0:
		cm, err := control.Parse(m.b)
		if err != nil {
			e.log.Debug("control message ignored", "error", err)
			return nil
		}
		switch v := cm.(type) {
		case *control.SessionConfig:
			return e.applyConfig(s, v)
		case *control.PulseAck:
			if v.Seq <= s.acked || v.Seq > s.seq {
				return nil
			}
			s.acked, s.token = v.Seq, v.NextToken
			off := time.Unix(0, v.ServerTime).Sub(e.cfg.Now())
			e.mu.Lock()
			e.status.Pulses++
			e.status.ServerTimeOffset = off.Round(time.Millisecond).String()
			e.mu.Unlock()
			if len(v.AddressToken) > 0 {
				if err := saveToken(e.cfg.StateDir, e.cfg.Gateway.String(), v.AddressToken, e.cfg.Now()); err != nil {
					e.log.Warn("address token not saved", "error", err)
				}
			}
		case *control.Denial:
			d := Denial{Time: time.Now().UTC(), Proto: v.Proto, Src: v.Src.String(), Dst: v.Dst.String(),
				Reason: v.Reason, PolicyIDs: v.PolicyIDs}
			e.log.Info("flow denied by the gateway", "proto", v.Proto, "src", d.Src, "dst", d.Dst, "reason", v.Reason)
			e.mu.Lock()
			e.status.Denials = append(e.status.Denials, d)
			if n := len(e.status.Denials); n > MaxDenials {
				e.status.Denials = slices.Delete(e.status.Denials, 0, n-MaxDenials)
			}
			e.mu.Unlock()
		case *control.Close:
			e.log.Warn("the gateway closed the session", "code", v.Code, "reason", v.Reason)
			return closeError(v)
		}
	case handshake.TypeRekeyResp:
		if s.rekey == nil {
			return nil
		}
		res, err := s.rekey.HandleRekeyResp(m.b)
		if err != nil {
			e.log.Debug("rekey response refused", "error", err)
			return nil
		}
		s.rekey.Zeroize()
		s.rekey = nil
		old := e.installKeys(res)
		e.prev.Swap(old).zeroize()
		s.prevUntil = time.Now().Add(e.cfg.Timers.OldKeys)
		e.mu.Lock()
		e.status.Rekeys++
		e.mu.Unlock()
		e.log.Debug("rekeyed")
	case handshake.TypeHandshakeError:
		// Never ends a working session.
		e.log.Debug("handshake error during a session ignored")
	}
	return nil
}

// sessionTick runs the session's timers.
func (e *Engine) sessionTick(s *session, now time.Time) error {
	t := e.cfg.Timers
	if silent := e.since(e.lastRecv.Load()); silent > time.Duration(DefaultMissedPulses)*s.interval {
		return fmt.Errorf("%w: nothing authenticated for %s", ErrSilent, silent.Round(time.Millisecond))
	}
	k := e.cur.Load()
	if k == nil || k.kp.Expired(now) {
		return ErrKeysExpired
	}
	switch {
	case s.rekey == nil && (now.Sub(k.kp.Created()) >= t.RekeyAfter || k.kp.NeedsRekey(now)):
		ri, err := handshake.NewRekeyInitiator(k.res, e.cfg.Rand, e.cfg.Now, e.randUint32())
		if err != nil {
			return fmt.Errorf("rekey: %w", err)
		}
		s.rekey = ri
		fallthrough
	case s.rekey != nil && (s.rekeySent.IsZero() || now.Sub(s.rekeySent) >= t.RekeyTimeout):
		msg, err := s.rekey.RekeyInit()
		if err != nil {
			return fmt.Errorf("rekey: %w", err)
		}
		s.rekeySent = now
		_ = e.sendOne(msg)
	}
	if !s.prevUntil.IsZero() && now.After(s.prevUntil) {
		e.prev.Swap(nil).zeroize()
		s.prevUntil = time.Time{}
	}
	if !now.Before(s.nextPulse) {
		e.sendPulse(s)
		s.nextPulse = now.Add(s.interval)
	}
	if e.since(e.lastSent.Load()) >= t.Keepalive {
		_ = e.sendPlain(nil)
	}
	return nil
}

func (e *Engine) sendPulse(s *session) {
	s.seq++
	p := &control.Pulse{Seq: s.seq, SessionToken: s.token, AgentTime: e.cfg.Now().UnixNano(),
		ClockOffset: int64(e.cfg.ClockOffset()), OS: e.cfg.OSName, AgentVersion: truncate(e.cfg.AgentVersion, control.MaxAgentVersion)}
	if e.cfg.Facts != nil && !s.factsErr {
		p.Facts = e.cfg.Facts()
	}
	err := e.sendControl(p)
	if err != nil && p.Facts != nil {
		e.log.Warn("posture facts refused by the encoding; pulses go without them", "error", err)
		s.factsErr = true
		p.Facts = nil
		err = e.sendControl(p)
	}
	if err != nil {
		e.log.Debug("send pulse", "error", err)
	}
}

// fail records err as the last error.
func (e *Engine) fail(err error) {
	if err == nil {
		return
	}
	e.log.Warn("tunnel", "error", err)
	e.mu.Lock()
	e.status.LastError = truncate(err.Error(), maxStatusText)
	e.status.LastErrorAt = time.Now().UTC()
	e.mu.Unlock()
	e.kickStatus()
}

func (e *Engine) setState(state string, next time.Time) {
	e.mu.Lock()
	if e.status.State != state {
		e.status.State = state
		e.status.Since = time.Now().UTC()
	}
	e.status.NextAttempt = next
	if state != StateUp {
		e.status.Addresses, e.status.Routes, e.status.MTU, e.status.PulseInterval = nil, nil, 0, ""
	}
	e.mu.Unlock()
	e.kickStatus()
}

func (e *Engine) kickStatus() {
	select {
	case e.statusCh <- struct{}{}:
	default:
	}
}

func (e *Engine) persistStatus() {
	if e.cfg.StateDir == "" {
		return
	}
	if err := writeStatus(e.cfg.StateDir, e.Status()); err != nil {
		e.log.Debug("status not written", "error", err)
	}
}

// statusWriter writes the status file every StatusInterval and on changes.
func (e *Engine) statusWriter(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTicker(e.cfg.Timers.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.statusCh:
		}
		e.persistStatus()
	}
}

// roamWatcher polls the local addresses and reopens the bind on a change.
func (e *Engine) roamWatcher(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTicker(e.cfg.Timers.RoamCheck)
	defer t.Stop()
	var last []netip.Addr
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addrs, err := e.cfg.LocalAddrs()
		if err != nil {
			continue
		}
		slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		addrs = slices.Compact(addrs)
		if last != nil && !slices.Equal(last, addrs) {
			e.Rebind()
		}
		last = addrs
	}
}
