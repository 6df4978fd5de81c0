package pulse_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/avonzt/avon/core/pulse"
)

// TestDeadAtAgreesWithDead checks, over random beats and times, that a
// session is in Dead(now) exactly when it is in Ended() or now is after
// its DeadAt: the per-session deadline an owner schedules says the same
// as the full scan.
func TestDeadAtAgreesWithDead(t *testing.T) {
	cfg := pulse.Config{Interval: 10 * time.Second, Missed: 3}
	tr := newTracker(t, cfg)
	rng := rand.New(rand.NewChaCha8([32]byte{3}))
	const n = 40
	toks := make([]pulse.Token, n)
	seqs := make([]uint64, n)
	for i := range n {
		toks[i] = add(t, tr, info(i, "agent", "0a"))
	}
	if got := tr.Ended(); len(got) != 0 {
		t.Fatalf("Ended with nothing ended: %v", got)
	}
	now := t0
	for step := range 400 {
		now = now.Add(time.Duration(rng.Int64N(int64(4 * time.Second))))
		i := rng.IntN(n)
		switch rng.IntN(10) {
		case 0:
			tr.End(sid(i))
		case 1, 2, 3, 4:
			seqs[i]++
			d, err := tr.Beat(sid(i), beatMsg(seqs[i], toks[i], now), now)
			if err == nil {
				toks[i] = d.Ack.NextToken
			}
		}
		dead := tr.Dead(now)
		ended := tr.Ended()
		var fromDeadAt []pulse.ID
		for j := range n {
			at, ok := tr.DeadAt(sid(j))
			if !ok {
				t.Fatalf("step %d: session %d not tracked", step, j)
			}
			if now.After(at) || slices.Contains(ended, sid(j)) {
				fromDeadAt = append(fromDeadAt, sid(j))
			}
		}
		cmp := func(a, b pulse.ID) int { return slices.Compare(a[:], b[:]) }
		slices.SortFunc(dead, cmp)
		slices.SortFunc(fromDeadAt, cmp)
		if !slices.Equal(dead, fromDeadAt) {
			t.Fatalf("step %d: Dead %d sessions, DeadAt/Ended %d", step, len(dead), len(fromDeadAt))
		}
	}
	// Exactly at the deadline a session is alive; a nanosecond later, dead.
	at, _ := tr.DeadAt(sid(0))
	if slices.Contains(tr.Dead(at), sid(0)) && !slices.Contains(tr.Ended(), sid(0)) {
		t.Fatal("dead at exactly DeadAt")
	}
	if !slices.Contains(tr.Dead(at.Add(time.Nanosecond)), sid(0)) {
		t.Fatal("alive after DeadAt")
	}
}

func TestEndedAndRemove(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	add(t, tr, info(1, "a", "01"))
	add(t, tr, info(2, "b", "02"))
	if _, ok := tr.DeadAt(sid(3)); ok {
		t.Fatal("DeadAt of an unknown session")
	}
	if at, ok := tr.DeadAt(sid(1)); !ok || !at.Equal(t0.Add(pulse.DefaultInterval*pulse.DefaultMissed)) {
		t.Fatalf("DeadAt = %v %v, want Established + 30s", at, ok)
	}
	tr.End(sid(2))
	tr.End(sid(2))
	if got := tr.Ended(); len(got) != 1 || got[0] != sid(2) {
		t.Fatalf("Ended = %v, want [session 2]", got)
	}
	tr.Remove(sid(2))
	if got := tr.Ended(); len(got) != 0 {
		t.Fatalf("Ended after Remove = %v", got)
	}
	tr.End(sid(1))
	tr.Close()
	if got := tr.Ended(); len(got) != 0 {
		t.Fatalf("Ended after Close = %v", got)
	}
}
