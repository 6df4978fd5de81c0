package gateway

import (
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
	"github.com/avonzt/avon/core/tunnel/control"
)

// newIdleGateway is a gateway that is not started (the test drives tick)
// holding n idle sessions established at testNow.
func newIdleGateway(t *testing.T, n int) (*Gateway, []*session, [][32]byte) {
	t.Helper()
	base := newEnv(t, nil)
	g, err := New(base.cfg, newNullTUN(), gatewaytest.NewNetwork(1).Bind())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	ss, toks := addIdleSessions(t, g, n, testNow)
	out := make([][32]byte, len(toks))
	for i, tk := range toks {
		out[i] = tk
	}
	return g, ss, out
}

// TestTimersManySessions runs the timer loop second by second over
// thousands of sessions with different deadlines (certificate expiry,
// pulses kept or missed) and checks after every tick that exactly the
// sessions whose deadlines passed have ended, that every live one is
// scheduled once (the wheel holds no ended session), and that each live
// session got its keepalive.
func TestTimersManySessions(t *testing.T) {
	const n = 3000
	g, ss, toks := newIdleGateway(t, n)
	const pulseLimit = DefaultPulseInterval * DefaultMissedPulses // 30 s
	// Every third session's certificate expires at +15.5 s; every other
	// session pulses at +20 s (so its pulse deadline moves to +50 s).
	certExp := testNow.Add(15*time.Second + 500*time.Millisecond)
	for i, s := range ss {
		if i%3 == 0 {
			s.notAfter = certExp
		}
	}
	beats := map[int]bool{}
	st := g.Stats()
	for sec := 1; sec <= 40; sec++ {
		now := testNow.Add(time.Duration(sec) * time.Second)
		if sec == 20 {
			for i := 0; i < n; i += 2 {
				if i%3 == 0 {
					continue // already ended by its certificate
				}
				d, err := g.tracker.Beat(ss[i].id, &control.Pulse{Seq: 1, SessionToken: toks[i], AgentTime: now.UnixNano()}, now)
				if err != nil {
					t.Fatalf("beat %d: %v", i, err)
				}
				toks[i] = d.Ack.NextToken
				beats[i] = true
			}
		}
		g.tick(now)
		live := 0
		for i, s := range ss {
			want := !(i%3 == 0 && now.After(certExp))
			last := testNow
			if beats[i] && sec >= 20 {
				last = testNow.Add(20 * time.Second)
			}
			if now.Sub(last) > pulseLimit {
				want = false
			}
			if got := !s.ended.Load(); got != want {
				t.Fatalf("+%ds: session %d live %v, want %v", sec, i, got, want)
			}
			if want {
				live++
			}
		}
		g.timers.Lock()
		wl := g.timers.w.Len()
		g.timers.Unlock()
		if wl != live || g.tracker.Len() != live {
			t.Fatalf("+%ds: %d live sessions, wheel %d, tracker %d", sec, live, wl, g.tracker.Len())
		}
		if sec == 10 {
			if got := st.KeepalivesTx.Load(); got != n {
				t.Fatalf("+10s: %d keepalives for %d sessions", got, n)
			}
		}
	}
	if st.SessionsDead.Load() == 0 || st.SessionsEnded.Load() != uint64(n-len(beats)) {
		t.Fatalf("dead %d, ended %d, want %d ended", st.SessionsDead.Load(), st.SessionsEnded.Load(), n-len(beats))
	}
}

// TestTimersEndRacesTick ends sessions while ticks re-file them: no ended
// session may stay in the wheel, no live one may fall out of it.
func TestTimersEndRacesTick(t *testing.T) {
	const n = 2000
	g, ss, _ := newIdleGateway(t, n)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		// Every tick finds every session due (keepalive deadline passed
		// and re-filed in the past after each send fails to move it).
		for sec := 11; ; sec++ {
			select {
			case <-stop:
				return
			default:
			}
			g.tick(testNow.Add(time.Duration(sec%25) * time.Second))
		}
	})
	for i := 0; i < n; i += 2 {
		g.Terminate(ss[i].id, "test")
	}
	close(stop)
	wg.Wait()
	g.timers.Lock()
	wl := g.timers.w.Len()
	g.timers.Unlock()
	live := 0
	for _, s := range ss {
		if !s.ended.Load() {
			live++
			g.timers.Lock()
			linked := s.timer.linked
			g.timers.Unlock()
			if !linked {
				t.Fatal("a live session fell out of the wheel")
			}
		}
	}
	if live != n/2 || wl != live {
		t.Fatalf("%d live of %d, wheel holds %d", live, n, wl)
	}
	// Ending a session takes it out of the wheel at once, not at its next
	// tick.
	g.Terminate(ss[1].id, "test")
	g.timers.Lock()
	defer g.timers.Unlock()
	if g.timers.w.Len() != wl-1 || ss[1].timer.linked {
		t.Fatalf("wheel holds %d after one more end, want %d", g.timers.w.Len(), wl-1)
	}
}

// TestTimersClockStepsBack: after the calibrated clock steps back an hour,
// sessions that pulse under the new clock and then fall silent are found
// dead 30 s later, as the old per-tick sweep found them, although their
// deadlines were first computed from times an hour ahead.
func TestTimersClockStepsBack(t *testing.T) {
	const n = 50
	g, ss, toks := newIdleGateway(t, n)
	g.tick(testNow.Add(time.Second))
	back := testNow.Add(-time.Hour)
	g.tick(back)
	pulsed := back.Add(5 * time.Second)
	for sec := 1; sec <= 40; sec++ {
		now := back.Add(time.Duration(sec) * time.Second)
		if now.Equal(pulsed) {
			for i, s := range ss {
				if _, err := g.tracker.Beat(s.id, &control.Pulse{Seq: 1, SessionToken: toks[i], AgentTime: now.UnixNano()}, now); err != nil {
					t.Fatal(err)
				}
			}
		}
		g.tick(now)
		dead := g.Stats().SessionsDead.Load()
		switch {
		case now.Sub(pulsed) <= DefaultPulseInterval*DefaultMissedPulses && dead != 0:
			t.Fatalf("%v after the pulse: %d sessions dead", now.Sub(pulsed), dead)
		case now.Sub(pulsed) > DefaultPulseInterval*DefaultMissedPulses+time.Second && dead != n:
			t.Fatalf("%v after the pulse: %d of %d sessions dead", now.Sub(pulsed), dead, n)
		}
	}
}
