package gateway

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// addIdleSessions installs n sessions that have nothing due at now: keys
// fresh, something sent and a pulse accepted just now.
func addIdleSessions(t testing.TB, g *Gateway, n int, now time.Time) ([]*session, []pulse.Token) {
	return addSessions(t, g, n, now, now)
}

// addSessions is addIdleSessions with the keypairs' creation time given.
func addSessions(t testing.TB, g *Gateway, n int, now, keysCreated time.Time) ([]*session, []pulse.Token) {
	t.Helper()
	out := make([]*session, 0, n)
	toks := make([]pulse.Token, 0, n)
	for i := range n {
		idx := uint32(i + 1)
		k1, k2 := [32]byte{1}, [32]byte{2}
		kp, err := transport.NewKeypair(transport.AES256GCM, &k1, &k2, idx, idx|1<<31, keysCreated)
		if err != nil {
			t.Fatal(err)
		}
		var id pulse.ID
		binary.BigEndian.PutUint32(id[:], idx)
		addr := netip.AddrFrom4([4]byte{100, 96, byte(idx >> 8), byte(idx)})
		s := &session{id: id, agentID: fmt.Sprintf("agent-%d", i), serial: "abc", addr: addr, established: now}
		s.keys.Store(&keySet{current: &keyState{res: &handshake.Result{}, kp: kp}})
		ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(idx >> 8), byte(idx)}), 4000)
		s.endpoint.Store(&epRef{ep: gatewaytest.Endpoint{AddrPort: ep}, addr: ep})
		s.lastRecv.Store(now.UnixNano())
		s.lastSent.Store(now.UnixNano())
		tok, err := g.tracker.Add(pulse.SessionInfo{ID: id, AgentID: s.agentID, CertSerial: s.serial, Established: now})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		g.table.Lock()
		g.table.byIndex[idx] = &indexEntry{sess: s}
		g.table.byAddr[addr] = s
		g.table.byID[id] = s
		g.table.Unlock()
		s.timer.v = s
		g.schedule(s, g.nextDue(s, now))
		out = append(out, s)
	}
	return out, toks
}

// BenchmarkTick is one run of the timer loop over n idle sessions with
// nothing due: the cost the timer goroutine pays every TickInterval.
func BenchmarkTick(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			base := newEnv(b, func(c *Config) { c.MaxSessions = 200_000 })
			cfg := base.cfg
			g, err := New(cfg, newNullTUN(), gatewaytest.NewNetwork(1).Bind())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { g.Close() })
			addIdleSessions(b, g, n, testNow)
			now := testNow.Add(time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				g.tick(now)
			}
			b.StopTimer()
			if got := g.tracker.Len(); got != n {
				b.Fatalf("%d sessions left of %d", got, n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
		})
	}
}

// sweepTick is the session part of the timer loop as it was before the
// timer wheel, kept as the benchmarks' baseline: every session and every
// tracker entry, every tick.
func sweepTick(g *Gateway, now time.Time) {
	g.table.RLock()
	all := make([]*session, 0, len(g.table.byID))
	for _, s := range g.table.byID {
		all = append(all, s)
	}
	g.table.RUnlock()
	for _, s := range all {
		ks := s.keys.Load()
		if ks == nil || ks.current == nil {
			continue
		}
		if ks.current.kp.Expired(now) || (!s.notAfter.IsZero() && now.After(s.notAfter)) ||
			now.Sub(s.established) >= MaxSessionAge {
			panic("benchmark session due")
		}
		if ks.previous != nil && !now.Before(ks.prevUntil) {
			panic("benchmark session due")
		}
		if now.Sub(time.Unix(0, s.lastSent.Load())) >= KeepaliveAfter {
			buf := make([]byte, 16, 16+2*16)
			if g.sealAndSend(s, buf, now) {
				g.stats.KeepalivesTx.Add(1)
			}
		}
	}
	if len(g.tracker.Dead(now)) != 0 {
		panic("benchmark session dead")
	}
}

// BenchmarkTimerLoop is one simulated second of an idle gateway: a tenth
// of the sessions send something (a PulseAck, every 10 s per session, as
// with the default pulse interval), then the timer loop runs. "sweep" is
// the loop before the timer wheel, "wheel" the current one, side by side.
// No session is due for anything but its keepalive check.
func BenchmarkTimerLoop(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		for _, mode := range []string{"sweep", "wheel"} {
			b.Run(fmt.Sprintf("%s/sessions=%d", mode, n), func(b *testing.B) {
				base := newEnv(b, func(c *Config) { c.MaxSessions = 200_000; c.PulseInterval = control.MaxPulseInterval })
				g, err := New(base.cfg, newNullTUN(), gatewaytest.NewNetwork(1).Bind())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { g.Close() })
				// Keys "created" an hour ahead so that they do not expire
				// during the simulated run (at most 1500 s).
				ss, _ := addSessions(b, g, n, testNow, testNow.Add(time.Hour))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					now := testNow.Add(time.Duration(1+i%1500) * time.Second)
					for j := i % 10; j < n; j += 10 {
						ss[j].lastSent.Store(now.UnixNano())
					}
					if mode == "sweep" {
						sweepTick(g, now)
					} else {
						g.tick(now)
					}
				}
				b.StopTimer()
				if k := g.stats.KeepalivesTx.Load(); k > uint64(n) {
					b.Fatalf("%d keepalives for %d sessions", k, n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
			})
		}
	}
}
