package gateway

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// refWheel is the obviously correct model of timerWheel: a map of due
// slots scanned in full.
type refWheel struct {
	width int64
	due   map[int]int64
	next  int64
}

func (r *refWheel) slotOf(t time.Time) int64 {
	ns := t.UnixNano()
	s := ns / r.width
	if ns < 0 && ns%r.width != 0 {
		s--
	}
	return s
}

func (r *refWheel) scheduleBy(id int, at time.Time) {
	s := max(r.slotOf(at), r.next)
	if cur, ok := r.due[id]; ok && cur <= s {
		return
	}
	r.due[id] = s
}

func (r *refWheel) fire(now time.Time) []int {
	cur := r.slotOf(now)
	var out []int
	switch {
	case cur < r.next-1:
		for id := range r.due {
			out = append(out, id)
		}
		clear(r.due)
	case cur < r.next:
		return nil
	default:
		for id, s := range r.due {
			if s <= cur {
				out = append(out, id)
				delete(r.due, id)
			}
		}
	}
	r.next = cur + 1
	slices.Sort(out)
	return out
}

// wheelOps drives a timerWheel and the model with the same operations
// decoded from ops (3 bytes each) and fails t at the first difference.
func wheelOps(t *testing.T, ops []byte, nbuckets int) {
	t.Helper()
	const width = time.Second
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	w := newTimerWheel[int](width, nbuckets, start)
	ref := &refWheel{width: int64(width), due: map[int]int64{}, next: w.next}
	const ids = 64
	entries := make([]wheelEntry[int], ids)
	for i := range entries {
		entries[i].v = i
	}
	now := start
	var fired []int
	for len(ops) >= 3 {
		op, a, b := ops[0], int(ops[1]), int(ops[2])
		ops = ops[3:]
		id := a % ids
		switch op % 4 {
		case 0, 1: // schedule id at now + b*250ms - 8s (past, present and up to ~56s ahead)
			at := now.Add(time.Duration(b)*250*time.Millisecond - 8*time.Second)
			if op%8 == 1 {
				at = now.Add(time.Duration(b) * 7 * time.Minute) // beyond the wheel's span
			}
			w.scheduleBy(&entries[id], at)
			ref.scheduleBy(id, at)
		case 2: // remove
			w.remove(&entries[id])
			delete(ref.due, id)
		case 3: // advance the clock (sometimes back) and fire
			d := time.Duration(b%32) * 300 * time.Millisecond
			switch {
			case a%16 == 0:
				d = -time.Duration(b%8) * time.Second // a step back
			case a%16 == 1:
				d = time.Duration(b) * time.Minute // a jump past the span
			}
			now = now.Add(d)
			fired = w.due(now, fired[:0])
			slices.Sort(fired)
			want := ref.fire(now)
			if !slices.Equal(fired, want) {
				t.Fatalf("at %v: fired %v, model %v", now.Sub(start), fired, want)
			}
		}
		if w.Len() != len(ref.due) {
			t.Fatalf("wheel holds %d, model %d", w.Len(), len(ref.due))
		}
		for id := range entries {
			s, ok := ref.due[id]
			if entries[id].linked != ok || (ok && entries[id].slot != s) {
				t.Fatalf("entry %d: linked %v slot %d, model %v %d", id, entries[id].linked, entries[id].slot, ok, s)
			}
		}
	}
}

// TestTimerWheelModel compares the wheel with the model over long random
// operation sequences, with few buckets (everything collides) and many.
func TestTimerWheelModel(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{42}))
	for _, nb := range []int{2, 8, 64} {
		for range 50 {
			ops := make([]byte, 3*2000)
			for i := range ops {
				ops[i] = byte(rng.Uint32())
			}
			wheelOps(t, ops, nb)
		}
	}
}

func FuzzTimerWheel(f *testing.F) {
	f.Add([]byte{0, 1, 40, 3, 2, 10, 3, 2, 30, 2, 1, 0, 3, 16, 4}, uint8(8))
	f.Add([]byte{1, 5, 5, 3, 1, 200, 3, 0, 7}, uint8(2))
	f.Fuzz(func(t *testing.T, ops []byte, nb uint8) {
		if len(ops) > 3*4096 {
			ops = ops[:3*4096]
		}
		wheelOps(t, ops, int(nb))
	})
}

// TestTimerWheelNeverEarlyAtMostOneSlotLate checks the timing contract
// with many entries and a clock moving in uneven steps: an entry fires at
// the first due call whose slot reaches its time, never before.
func TestTimerWheelNeverEarlyAtMostOneSlotLate(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	w := newTimerWheel[int](time.Second, 64, start)
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	const n = 20000
	entries := make([]wheelEntry[int], n)
	at := make([]time.Time, n)
	for i := range entries {
		entries[i].v = i
		at[i] = start.Add(time.Duration(rng.Int64N(int64(300 * time.Second))))
		w.scheduleBy(&entries[i], at[i])
	}
	now, prev := start, start
	seen := 0
	var out []int
	for step := 0; step < 1000 && seen < n; step++ {
		prev, now = now, now.Add(time.Duration(rng.Int64N(int64(3*time.Second))))
		out = w.due(now, out[:0])
		for _, i := range out {
			if w.slotOf(at[i]) > w.slotOf(now) {
				t.Fatalf("entry due %v fired early at %v", at[i].Sub(start), now.Sub(start))
			}
			if w.slotOf(at[i]) <= w.slotOf(prev) && step > 0 {
				t.Fatalf("entry due %v fired late at %v (previous call %v)", at[i].Sub(start), now.Sub(start), prev.Sub(start))
			}
		}
		seen += len(out)
	}
	if seen != n || w.Len() != 0 {
		t.Fatalf("%d of %d entries fired, %d left", seen, n, w.Len())
	}
}
