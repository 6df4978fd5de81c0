package replay

import (
	"math/rand/v2"
	"testing"
)

// model is the obviously-correct reference: every accepted counter in a map,
// the same "too old" rule as the window.
type model struct {
	seen    map[uint64]bool
	highest uint64
}

func newModel() *model { return &model{seen: map[uint64]bool{}} }

func (m *model) check(c uint64) bool {
	if c >= Limit || m.seen[c] {
		return false
	}
	return c+WindowSize >= m.highest
}

func (m *model) accept(c uint64) bool {
	if !m.check(c) {
		return false
	}
	m.seen[c] = true
	m.highest = max(m.highest, c)
	return true
}

type step struct {
	counter uint64
	want    bool
}

func TestWindowSequences(t *testing.T) {
	const W = WindowSize
	tests := []struct {
		name  string
		steps []step
	}{
		{"counter zero once", []step{{0, true}, {0, false}, {1, true}, {0, false}}},
		{"in order", []step{{0, true}, {1, true}, {2, true}, {3, true}, {4, true}}},
		{"duplicates", []step{{5, true}, {5, false}, {6, true}, {5, false}, {6, false}}},
		{"reordered within window", []step{{10, true}, {8, true}, {9, true}, {7, true}, {8, false}, {11, true}, {0, true}}},
		{"exactly at the edge", []step{{W + 100, true}, {100, true}, {99, false}, {100, false}, {101, true}}},
		{"one past the edge", []step{{W + 1, true}, {0, false}, {1, true}}},
		{"edge from an empty start", []step{{W, true}, {0, true}, {0, false}}},
		{"too old", []step{{10000, true}, {10000 - W - 1, false}, {5, false}, {0, false}}},
		{"jump within a block", []step{{1, true}, {63, true}, {2, true}, {63, false}}},
		{"jump across one block", []step{{63, true}, {64, true}, {0, true}, {63, false}, {64, false}}},
		{"big jump clears the ring", []step{
			{0, true}, {1, true}, {2, true},
			{1 << 20, true},
			{(1 << 20) - 1, true}, {(1 << 20) - W, true}, {(1 << 20) - W - 1, false},
			{1 << 20, false},
		}},
		{"jump of exactly the ring size", []step{
			{64, true}, {64 + 2048, true}, {64 + 2048 - W, true}, {64, false}, {64 + 2048, false},
		}},
		{"jump of a ring size plus one block reuses slots", []step{
			// 64 and 64+64*32 share a ring slot: the jump must clear it.
			{64, true}, {64 + 64*ringBlocks, true}, {64 + 64*ringBlocks - 1, true}, {64 + 64*ringBlocks, false},
		}},
		{"stale bits of a reused slot are cleared", []step{
			{64, true}, {65, true}, {69 + 64*ringBlocks, true}, {65 + 64*ringBlocks, true}, {64 + 64*ringBlocks, true},
		}},
		{"wrapped slot is cleared on advance", []step{
			// fill block 0, then slide one ring forward a block at a time
			{0, true}, {5, true}, {63, true},
			{64 * ringBlocks, true}, // block 32 shares slot 0 with block 0
			{64*ringBlocks + 5, true},
			{64*ringBlocks + 63, true},
			{64*ringBlocks + 63, false},
		}},
		{"max counter", []step{{Limit - 1, true}, {Limit - 1, false}, {Limit - 2, true}, {Limit - 1 - W, true}, {Limit - 2 - W, false}}},
		{"limit refused", []step{{Limit, false}, {Limit + 1, false}, {^uint64(0), false}, {0, true}}},
		{"limit refused after max", []step{{Limit - 1, true}, {Limit, false}, {^uint64(0), false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w Window
			m := newModel()
			for i, s := range tc.steps {
				if got := w.Check(s.counter); got != s.want {
					t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.counter, got, s.want)
				}
				if got := w.Accept(s.counter); got != s.want {
					t.Fatalf("step %d: Accept(%d) = %v, want %v", i, s.counter, got, s.want)
				}
				if got := m.accept(s.counter); got != s.want {
					t.Fatalf("step %d: the model says %v for %d; the table is wrong", i, got, s.counter)
				}
				if w.Check(s.counter) {
					t.Fatalf("step %d: Check(%d) true right after Accept", i, s.counter)
				}
			}
		})
	}
}

func TestCheckChangesNothing(t *testing.T) {
	var w Window
	for c := uint64(0); c < 100; c += 3 {
		w.Accept(c)
	}
	before := w
	for _, c := range []uint64{0, 1, 99, 100, 5000, 1 << 40, Limit - 1, Limit, ^uint64(0)} {
		w.Check(c)
	}
	if w != before {
		t.Fatal("Check changed the window")
	}
}

func TestRefusedAcceptChangesNothing(t *testing.T) {
	var w Window
	w.Accept(5000)
	w.Accept(4000)
	before := w
	for _, c := range []uint64{5000, 4000, 5000 - WindowSize - 1, 0, Limit, ^uint64(0)} {
		if w.Accept(c) {
			t.Fatalf("Accept(%d) = true", c)
		}
	}
	if w != before {
		t.Fatal("a refused Accept changed the window")
	}
}

func TestReset(t *testing.T) {
	var w Window
	for c := uint64(0); c < 3000; c++ {
		if !w.Accept(c) {
			t.Fatalf("Accept(%d) = false in order", c)
		}
	}
	if w.Highest() != 2999 {
		t.Fatalf("Highest = %d, want 2999", w.Highest())
	}
	w.Reset()
	if w != (Window{}) {
		t.Fatal("Reset left state behind")
	}
	for _, c := range []uint64{0, 1, 2999, 2998} {
		if !w.Accept(c) {
			t.Fatalf("Accept(%d) = false after Reset", c)
		}
	}
}

// TestAgainstModel drives the window and the map model with random sequences
// shaped like real traffic (mostly in order, some reordering and duplicates,
// rare big jumps and stale packets) and requires identical answers.
func TestAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 64; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x61766f6e))
		var w Window
		m := newModel()
		next := uint64(0)
		for i := range 20000 {
			var c uint64
			switch p := r.IntN(100); {
			case p < 60:
				c = next
				next++
			case p < 80: // reordered near the front
				c = next - min(next, uint64(r.IntN(80)))
			case p < 88: // around the window edge
				c = next - min(next, uint64(WindowSize-8+r.IntN(16)))
			case p < 93: // a duplicate of something recent
				c = next - min(next, uint64(r.IntN(3000)))
			case p < 96: // jump ahead
				next += uint64(r.IntN(5000))
				c = next
			case p < 98: // near the limit
				c = Limit - 1 - uint64(r.IntN(4000))
				next = max(next, c)
			default:
				c = r.Uint64()
			}
			if got, want := w.Check(c), m.check(c); got != want {
				t.Fatalf("seed %d step %d: Check(%d) = %v, model %v", seed, i, c, got, want)
			}
			if got, want := w.Accept(c), m.accept(c); got != want {
				t.Fatalf("seed %d step %d: Accept(%d) = %v, model %v", seed, i, c, got, want)
			}
			if w.Highest() != m.highest {
				t.Fatalf("seed %d step %d: Highest = %d, model %d", seed, i, w.Highest(), m.highest)
			}
		}
	}
}

// FuzzWindow decodes the input as a sequence of counters (8 bytes each; the
// first byte of a group selects relative or absolute) and compares the window
// with the model after every step.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0x07, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0x08, 0x40, 1, 0, 0, 0, 0, 0, 0, 0x40, 2, 0, 0, 0, 0, 0, 0, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Window
		m := newModel()
		for i := 0; i+8 <= len(data) && i < 8*4096; i += 8 {
			var c uint64
			for _, b := range data[i : i+8] {
				c = c<<8 | uint64(b)
			}
			switch data[i] >> 4 {
			case 1: // forward of the highest by the low 16 bits
				c = m.highest + c&0xffff
			case 2: // behind the highest by the low 16 bits
				c = m.highest - min(m.highest, c&0xffff)
			}
			if got, want := w.Check(c), m.check(c); got != want {
				t.Fatalf("step %d: Check(%d) = %v, model %v", i/8, c, got, want)
			}
			if got, want := w.Accept(c), m.accept(c); got != want {
				t.Fatalf("step %d: Accept(%d) = %v, model %v", i/8, c, got, want)
			}
		}
	})
}

func BenchmarkAcceptInOrder(b *testing.B) {
	var w Window
	c := uint64(0)
	for b.Loop() {
		if !w.Accept(c) {
			b.Fatal("refused")
		}
		c++
	}
}

func BenchmarkAcceptReordered(b *testing.B) {
	// Counters arrive in groups of 64 in a fixed shuffled order (up to 63
	// behind the highest): every one is accepted.
	var w Window
	perm := rand.New(rand.NewPCG(7, 7)).Perm(64)
	i := uint64(0)
	for b.Loop() {
		c := i&^63 + uint64(perm[i&63])
		if !w.Accept(c) {
			b.Fatal("refused")
		}
		i++
	}
}

func BenchmarkCheckDuplicate(b *testing.B) {
	var w Window
	for c := uint64(0); c < 2048; c++ {
		w.Accept(c)
	}
	for b.Loop() {
		if w.Check(2000) {
			b.Fatal("duplicate accepted")
		}
	}
}
