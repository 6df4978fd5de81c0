package gateway

import (
	"context"
	"time"

	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// limiterSweepEvery is how often the rate limiter forgets refilled sources.
const limiterSweepEvery = time.Minute

// timerLoop runs tick every TickInterval until ctx ends.
func (g *Gateway) timerLoop(ctx context.Context) {
	t := time.NewTicker(TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.tick(g.cfg.Now())
		}
	}
}

// timerBuckets is the timer wheel's size: slots of TickInterval, so 64 s
// of span. Every session is due again within KeepaliveAfter (its
// keepalive deadline), so entries beyond the span are rare (a clock that
// jumped).
const timerBuckets = 64

// schedule makes the timer loop look at s no later than at (earlier if
// it is already due earlier). An ended session is not scheduled: endSession
// sets ended before it unschedules, under the same lock, so a session
// re-filed by a tick racing its end never stays in the wheel.
func (g *Gateway) schedule(s *session, at time.Time) {
	g.timers.Lock()
	if !s.ended.Load() {
		g.timers.w.scheduleBy(&s.timer, at)
	}
	g.timers.Unlock()
}

// unschedule takes s out of the timer wheel.
func (g *Gateway) unschedule(s *session) {
	g.timers.Lock()
	g.timers.w.remove(&s.timer)
	g.timers.Unlock()
}

// tick does every timed duty at the calibrated time now: expire half-open
// handshakes and reassemblies, and for the sessions the timer wheel says
// are due: retire replaced keys, send keepalives, and end sessions whose
// keys expired, whose certificate expired, that are older than
// MaxSessionAge or that missed their pulses. Sessions not due cost
// nothing: each is filed in the wheel at the earliest of its deadlines and
// re-filed when it comes up (a deadline that moved later, as the keepalive
// deadline does with every packet sent, is found then).
func (g *Gateway) tick(now time.Time) {
	g.expirePending(now)
	g.reasm.Expire(now)
	if g.flows != nil {
		g.flows.Expire(now)
	}
	g.timers.Lock()
	sweep := now.Sub(g.timers.lastSweep) >= limiterSweepEvery || now.Before(g.timers.lastSweep)
	if sweep {
		g.timers.lastSweep = now
	}
	due := g.timers.w.due(now, g.timers.buf[:0])
	g.timers.buf = due[:0]
	g.timers.Unlock()
	if sweep {
		g.limiter.Sweep(now)
	}
	for i, s := range due {
		due[i] = nil
		if next, live := g.tickSession(s, now); live {
			g.schedule(s, next)
		}
	}
	// Sessions the tracker was told to end (Tracker.End).
	for _, id := range g.tracker.Ended() {
		if s := g.sessionByID(id); s != nil {
			g.stats.SessionsDead.Add(1)
			g.endSession(s, control.ClosePulseFailed, "pulses missed", true)
		} else {
			g.tracker.Remove(id)
		}
	}
}

// tickSession does s's due duties at now and returns when s is next due,
// or live false when it ended.
func (g *Gateway) tickSession(s *session, now time.Time) (time.Time, bool) {
	ks := s.keys.Load()
	if ks == nil || ks.current == nil || s.ended.Load() {
		return time.Time{}, false
	}
	switch {
	case ks.current.kp.Expired(now):
		// Nothing can be sealed any more: the agent failed to rekey.
		g.stats.SessionsExpired.Add(1)
		g.endSession(s, 0, "", false)
		return time.Time{}, false
	case !s.notAfter.IsZero() && now.After(s.notAfter):
		g.endSession(s, control.CloseRevoked, "certificate expired", true)
		return time.Time{}, false
	case now.Sub(s.established) >= MaxSessionAge:
		g.endSession(s, control.CloseShutdown, "session age limit: full handshake required", true)
		return time.Time{}, false
	}
	deadAt, tracked := g.tracker.DeadAt(s.id)
	if tracked && now.After(deadAt) {
		g.stats.SessionsDead.Add(1)
		g.endSession(s, control.ClosePulseFailed, "pulses missed", true)
		return time.Time{}, false
	}
	if ks.previous != nil && !now.Before(ks.prevUntil) {
		s.mu.Lock()
		if cur := s.keys.Load(); cur.previous == ks.previous && !s.ended.Load() {
			g.retireLocked(s, cur.previous)
			s.keys.Store(&keySet{current: cur.current, next: cur.next})
		}
		s.mu.Unlock()
	}
	if now.Sub(time.Unix(0, s.lastSent.Load())) >= KeepaliveAfter {
		buf := make([]byte, 16, 16+2*16)
		if g.sealAndSend(s, buf, now) {
			g.stats.KeepalivesTx.Add(1)
		}
	}
	next := g.nextDue(s, now)
	if tracked {
		// Dead at any instant after deadAt.
		next = earliest(next, deadAt.Add(time.Nanosecond))
	}
	// At least every KeepaliveAfter. Normally the keepalive deadline
	// already says so (lastSent is not after now); after the calibrated
	// clock stepped back, the deadlines computed from times the old clock
	// stamped are far ahead and would miss activity stamped by the new
	// clock (a pulse, then silence), which can only move them earlier.
	next = earliest(next, now.Add(KeepaliveAfter))
	return next, true
}

// nextDue is the earliest of s's deadlines other than its pulses': keys
// rejected, certificate expired, session age limit, replaced keys retired,
// keepalive.
func (g *Gateway) nextDue(s *session, now time.Time) time.Time {
	next := time.Unix(0, s.lastSent.Load()).Add(KeepaliveAfter)
	next = earliest(next, s.established.Add(MaxSessionAge))
	if !s.notAfter.IsZero() {
		next = earliest(next, s.notAfter.Add(time.Nanosecond))
	}
	if ks := s.keys.Load(); ks != nil {
		if ks.current != nil {
			next = earliest(next, ks.current.kp.Created().Add(transport.RejectAfterTime))
		}
		if ks.previous != nil {
			next = earliest(next, ks.prevUntil)
		}
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// expirePending drops half-open handshakes older than PendingTimeout (or
// from the future: the clock went back) that no worker is finishing.
func (g *Gateway) expirePending(now time.Time) {
	var drop []*pendingHS
	g.table.Lock()
	for idx, ph := range g.table.pendings {
		if age := now.Sub(ph.created); (age >= PendingTimeout || age < -PendingTimeout) && ph.done.CompareAndSwap(false, true) {
			g.releasePendingLocked(idx, ph.src)
			drop = append(drop, ph)
		}
	}
	g.table.Unlock()
	for _, ph := range drop {
		ph.p.Zeroize()
	}
}
