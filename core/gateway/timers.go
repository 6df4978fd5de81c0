package gateway

import (
	"context"
	"time"

	"github.com/avonzt/avon/core/tunnel/control"
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

// tick does every timed duty at the calibrated time now: expire half-open
// handshakes and reassemblies, retire replaced keys, send keepalives, and
// end sessions whose keys expired, whose certificate expired, that are
// older than MaxSessionAge or that missed their pulses.
func (g *Gateway) tick(now time.Time) {
	g.expirePending(now)
	g.reasm.Expire(now)
	if g.flows != nil {
		g.flows.Expire(now)
	}
	if now.Sub(g.lastSweep) >= limiterSweepEvery || now.Before(g.lastSweep) {
		g.limiter.Sweep(now)
		g.lastSweep = now
	}

	g.table.RLock()
	all := make([]*session, 0, len(g.table.byID))
	for _, s := range g.table.byID {
		all = append(all, s)
	}
	g.table.RUnlock()
	for _, s := range all {
		g.tickSession(s, now)
	}
	for _, id := range g.tracker.Dead(now) {
		if s := g.sessionByID(id); s != nil {
			g.stats.SessionsDead.Add(1)
			g.endSession(s, control.ClosePulseFailed, "pulses missed", true)
		} else {
			g.tracker.Remove(id)
		}
	}
}

func (g *Gateway) tickSession(s *session, now time.Time) {
	ks := s.keys.Load()
	if ks == nil || ks.current == nil {
		return
	}
	switch {
	case ks.current.kp.Expired(now):
		// Nothing can be sealed any more: the agent failed to rekey.
		g.stats.SessionsExpired.Add(1)
		g.endSession(s, 0, "", false)
		return
	case !s.notAfter.IsZero() && now.After(s.notAfter):
		g.endSession(s, control.CloseRevoked, "certificate expired", true)
		return
	case now.Sub(s.established) >= MaxSessionAge:
		g.endSession(s, control.CloseShutdown, "session age limit: full handshake required", true)
		return
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
