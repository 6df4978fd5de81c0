package gateway

import "testing"

// TestBufPool: buffers of the pool's size come back (the pool may drop
// them, so reuse is looked for over several rounds, not asserted once);
// a request above the size gets a buffer of its own that put does not
// keep, and foreign slices are ignored.
func TestBufPool(t *testing.T) {
	p := newBufPool(64)
	if b := p.get(100); len(b) != 100 {
		t.Fatalf("get(100) from a 64-byte pool: %d bytes", len(b))
	}
	p.put(make([]byte, 100)) // ignored
	p.put(make([]byte, 10))  // ignored
	for range 100 {
		if b := p.get(0); cap(b) != 64 {
			t.Fatalf("pool handed out a foreign buffer of capacity %d", cap(b))
		}
	}
	reused := false
	for range 100 {
		b := p.get(10)
		if len(b) != 10 || cap(b) != 64 {
			t.Fatalf("get(10): len %d cap %d", len(b), cap(b))
		}
		p.put(b)
		if c := p.get(1); &c[0] == &b[0] {
			reused = true
		}
	}
	if !reused {
		t.Fatal("no buffer was ever reused in 100 rounds")
	}
}
