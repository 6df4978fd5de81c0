package pulse_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
)

// wirePulse is a typical pulse as the gateway gets it: parsed from the
// wire, so its strings and map are fresh allocations like in production.
func wirePulse(tb testing.TB, seq uint64, tok pulse.Token, at time.Time) *control.Pulse {
	b, err := control.Marshal(&control.Pulse{
		Seq: seq, SessionToken: tok, AgentTime: at.UnixNano(), ClockOffset: 1500,
		OS: "linux", AgentVersion: "1.4.2",
		Facts: map[string]string{
			"disk.encrypted": "true", "firewall": "on", "os.build": "6.12.8-amd64",
			"screen.lock": "300", "edr": "running", "patch.age.days": "3",
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := control.Parse(b)
	if err != nil {
		tb.Fatal(err)
	}
	return m.(*control.Pulse)
}

// memoryPerSession fills a tracker with n sessions (each with its own
// agent id and 32-digit serial, like the CA's) and, when pulsed, one
// accepted pulse carrying six posture facts; it returns the heap growth per
// session with everything the tracker keeps alive.
func memoryPerSession(tb testing.TB, n int, pulsed bool) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tr := newTracker(tb, pulse.Config{})
	for i := range n {
		in := pulse.SessionInfo{ID: sid(i + 1), AgentID: fmt.Sprintf("agent-%08d", i),
			CertSerial: fmt.Sprintf("7f%030x", i+1), Established: t0}
		tok := add(tb, tr, in)
		if pulsed {
			if _, err := tr.Beat(in.ID, wirePulse(tb, 1, tok, t0), t0); err != nil {
				tb.Fatal(err)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(tr)
	if tr.Len() != n {
		tb.Fatalf("%d sessions", tr.Len())
	}
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// TestMemoryBudget: 10,000 sessions fit the budget of 4 KiB each, facts
// included.
func TestMemoryBudget(t *testing.T) {
	for _, pulsed := range []bool{false, true} {
		if per := memoryPerSession(t, 10_000, pulsed); per > 4096 || per <= 0 {
			t.Errorf("pulsed %v: %.0f bytes per session", pulsed, per)
		} else {
			t.Logf("pulsed %v: %.0f bytes per session", pulsed, per)
		}
	}
}

// BenchmarkTrackerMemory reports the heap bytes per tracked session for
// 10,000 sessions: idle (added, no pulse yet) and after one pulse with six
// posture facts.
func BenchmarkTrackerMemory(b *testing.B) {
	for _, c := range []struct {
		name   string
		pulsed bool
	}{{"idle", false}, {"pulsed", true}} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = memoryPerSession(b, 10_000, c.pulsed)
			}
			b.ReportMetric(per, "bytes/session")
		})
	}
}

// BenchmarkBeat: accepted pulses round robin over 10,000 sessions (token
// check, rotation, posture). The pulses are prepared beforehand.
func BenchmarkBeat(b *testing.B) {
	const n = 10_000
	tr := newTracker(b, pulse.Config{})
	toks := make([]pulse.Token, n)
	for i := range n {
		toks[i] = add(b, tr, info(i+1, fmt.Sprintf("agent-%d", i), fmt.Sprintf("%x", i+1)))
	}
	p := wirePulse(b, 1, pulse.Token{}, t0)
	seqs := make([]uint64, n)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % n
		i++
		seqs[k]++
		p.Seq, p.SessionToken = seqs[k], toks[k]
		d, err := tr.Beat(sid(k+1), p, t0)
		if err != nil {
			b.Fatal(err)
		}
		toks[k] = d.Ack.NextToken
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "beats/s")
}

// BenchmarkDead: one sweep over 10,000 live sessions.
func BenchmarkDead(b *testing.B) {
	tr := newTracker(b, pulse.Config{})
	for i := range 10_000 {
		add(b, tr, info(i+1, fmt.Sprintf("agent-%d", i), fmt.Sprintf("%x", i+1)))
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := tr.Dead(t0.Add(time.Second)); len(d) != 0 {
			b.Fatal(d)
		}
	}
}

// BenchmarkFacts: the policy's per-flow lookup of a session's posture.
func BenchmarkFacts(b *testing.B) {
	tr := newTracker(b, pulse.Config{})
	tok := add(b, tr, info(1, "agent", "1"))
	if _, err := tr.Beat(sid(1), wirePulse(b, 1, tok, t0), t0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tr.Facts(sid(1)); !ok {
			b.Fatal("no facts")
		}
	}
}
